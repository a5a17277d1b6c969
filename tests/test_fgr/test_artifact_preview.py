"""fgr/artifact_preview.py (scripts/preview_artifact_sources.py): one sheet row per family mode, captions printed."""
import cv2
import pytest

from finpercep_basicsr.fgr.artifact_preview import preview_artifact_sources
from finpercep_basicsr.utils.errors import UserInputError


def test_sheet_has_a_row_per_mode_and_bad_arguments_are_named(tmp_path, capsys):
    path = preview_artifact_sources(str(tmp_path), size=32, types=['artifact_ringing', 'artifact_painterly'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('base bicubic: lap ') and lines[-1] == f'wrote {path}'
    rows = [line for line in lines if ' | s=0.25: lap ' in line]
    assert rows[0].startswith('artifact_ringing ') and any(r.startswith('artifact_painterly ') for r in rows)
    sheet = cv2.imread(path)
    assert sheet.shape[1] == 4 * 32 and sheet.shape[0] > len(rows) * 32  # GT | base | low | high, plus captions
    with pytest.raises(UserInputError, match='multiple of 4'):
        preview_artifact_sources(str(tmp_path), size=30)
    with pytest.raises(UserInputError, match="unknown artifact type 'artifact_nope'"):
        preview_artifact_sources(str(tmp_path), size=32, types=['artifact_nope'])
