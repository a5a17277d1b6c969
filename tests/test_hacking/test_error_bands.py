"""hacking/error_bands.py (scripts/error_bands.py): the exact split of an SR error into mean colour, the LQ's band
and detail."""
import json
import os

import numpy as np
import pytest

from finpercep_basicsr.hacking.error_bands import error_bands, main
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import write_rgb8


def _gt(h=32, w=48):
    rng = np.random.default_rng(0)
    return (0.3 + 0.4 * rng.random((h, w, 3))).astype(np.float32)


def test_bands_add_up_to_the_mse_and_separate_what_they_name():
    gt = _gt()
    rng = np.random.default_rng(1)
    sr = np.clip(gt + 0.05 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
    bands = error_bands(sr, gt)
    assert sum(bands.values()) == pytest.approx(float(np.mean((sr - gt) ** 2)), rel=1e-6)
    # a colour cast is all colour: mean square of the per-channel shifts
    cast = error_bands(gt + np.float32([0.0, 0.03, -0.04]), gt)
    assert cast['color'] == pytest.approx((0.03 ** 2 + 0.04 ** 2) / 3, rel=1e-5)
    assert cast['lq_band'] == pytest.approx(0, abs=1e-10) and cast['detail'] == pytest.approx(0, abs=1e-10)
    y = np.arange(gt.shape[0], dtype=np.float32)[:, None, None]
    shading = error_bands(gt + 0.02 * np.sin(2 * np.pi * y / 16), gt)  # period 16 px: inside an x4 LQ's band
    assert shading['lq_band'] > 0.99 * sum(shading.values())
    x = np.arange(gt.shape[1], dtype=np.float32)[None, :, None]
    texture = error_bands(gt + 0.02 * np.cos(np.pi * x / 2), gt)  # period 4 px: finer than the LQ holds
    assert texture['detail'] > 0.99 * sum(texture.values())
    assert error_bands(gt + 0.02 * np.cos(np.pi * x / 2), gt, scale=1)['lq_band'] > 0.99 * 0.02 ** 2 / 2


def test_the_cli_prints_the_table_and_names_a_missing_output(tmp_path, capsys):
    gt = _gt()
    for folder, img in (('gt', gt), ('start', gt), ('cast', np.clip(gt + 0.1, 0, 1))):
        os.makedirs(tmp_path / folder)
        write_rgb8(str(tmp_path / folder / 'a.png'), img)
    out = tmp_path / 'bands.json'
    assert main(['--gt', str(tmp_path / 'gt'), '--run', f'start={tmp_path / "start"}',
                 '--run', f'cast={tmp_path / "cast"}', '--out', str(out)]) == 0
    assert '| cast |' in capsys.readouterr().out
    runs = json.loads(out.read_text())
    assert runs['start']['mse'] == pytest.approx(0, abs=1e-12)
    assert runs['cast']['color'] > 0.9 * runs['cast']['mse'] > 0
    os.remove(tmp_path / 'cast' / 'a.png')
    with pytest.raises(UserInputError, match='a.png: missing'):
        main(['--gt', str(tmp_path / 'gt'), '--run', f'cast={tmp_path / "cast"}'])
    with pytest.raises(UserInputError, match='expected NAME=DIR'):
        main(['--gt', str(tmp_path / 'gt'), '--run', 'no-equals-sign'])
