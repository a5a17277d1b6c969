"""fgr/build_bench.py (scripts/bench_fgr.py): a tiny build, then both read backends, printed as rates."""
import os
import re

import cv2
import pytest
from skimage import data

from finpercep_basicsr.fgr.build_bench import run_build_bench
from finpercep_basicsr.utils.errors import UserInputError

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'options', 'data',
                    'fgr_build_tiny.yml')


def test_bench_builds_reads_both_backends_and_keeps_a_given_folder(tmp_path, capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'astronaut.png'), cv2.resize(data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA))
    out = tmp_path / 'built'
    # one sample asked, a whole crop built: 2 SR sources x 1 mask
    result = run_build_bench(TINY, samples=1, photos=[str(photos)], out=str(out), read_seconds=0.05)
    printed = capsys.readouterr().out
    assert re.search(r'^build: 2 samples of 64 px with 2 SR sources \(bicubic, lanczos\), num_workers=0', printed, re.M)
    assert re.search(r'^read \(2 items, .*LMDB/folder = [\d.]+$', printed, re.M)
    assert result['build']['built_now'] == 2 and all(rate > 0 for rate in result['read'].values())
    assert os.path.isfile(out / 'meta_info.jsonl')
    with pytest.raises(UserInputError, match='needs a fresh folder'):
        run_build_bench(TINY, photos=[str(photos)], out=str(out))
