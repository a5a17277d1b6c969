"""Relabelling a stored FGR set: its own options give back its labels, others follow the formula; refusals."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import yaml
from skimage import data

from finpercep_basicsr.fgr import store
from finpercep_basicsr.fgr.builder import build_fgr
from finpercep_basicsr.fgr.relabel import relabel_fgr
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import read_image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = {'alpha': 1.0, 'normalize': {'type': 'percentile', 'percentile': 99, 'min_scale': 0.1}}


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """A real photo's crops: bicubic swapped into the GT, lanczos swapped into the bicubic output."""
    tmp = tmp_path_factory.mktemp('relabel')
    os.makedirs(tmp / 'photos')
    astro = cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp / 'photos' / 'astronaut.png'), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
    with open(os.path.join(ROOT, 'options', 'data', 'fgr_build_tiny.yml')) as f:
        opt = yaml.safe_load(f)
    bicubic = {'type': 'bicubic', 'name': 'bicubic', 'scale': 4}
    opt.update(dataroot=str(tmp / 'fgr'), labels=LABELS, lmdb={'enabled': False}, contact_sheet={'num': 0},
               sr_sources=[bicubic, {'type': 'lanczos', 'name': 'lanczos', 'scale': 4, 'swap_base': bicubic}])
    opt['photos'].update(folders=[str(tmp / 'photos')], crops_per_photo=3)
    build_fgr(opt, progress=False)
    return tmp


def _files(root, key):
    return {n: open(os.path.join(root, key, n), 'rb').read() for n in sorted(os.listdir(os.path.join(root, key)))}


def test_the_sets_own_options_give_back_its_labels_and_stats(built, tmp_path):
    src, out = str(built / 'fgr'), str(tmp_path / 'same')
    summary = relabel_fgr(src, out, LABELS, progress=False)
    assert summary['samples'] == summary['relabelled_now'] == 6
    for key in ('gt', 'sr', 'syn', 'lq', 'mask', 'pdm'):
        assert _files(out, key) == _files(src, key), key
    assert [{k: v for k, v in e.items() if k != 'labels'} for e in store.read_meta(out)] == store.read_meta(src)
    assert {e.get('swap_base') for e in store.read_meta(out)} == {None, 'bicubic'}
    again = relabel_fgr(src, out, LABELS, progress=False)
    assert again['relabelled_now'] == 0 and len(store.read_meta(out)) == 6


def test_other_options_follow_the_formula_inside_the_mask_or_everywhere(built, tmp_path):
    src, out, s = str(built / 'fgr'), str(tmp_path / 'fixed'), 0.05
    labels = {'alpha': 1.0, 'normalize': {'type': 'fixed', 'scale': s}}
    relabel_fgr(src, out, labels, progress=False)
    for entry in store.read_meta(out):
        assert entry['labels'] == labels and entry['label_scale'] == s
        syn, gt = (read_image(os.path.join(src, k, entry['name'] + '.png')) for k in ('syn', 'gt'))
        mask = cv2.imread(os.path.join(src, 'mask', entry['name'] + '.png'), cv2.IMREAD_UNCHANGED) / 255.0
        expected = np.clip(np.abs(syn - gt).mean(axis=2) / s, 0, 1)
        if not entry.get('swap_base'):
            expected = expected * mask
        pdm = cv2.imread(os.path.join(out, 'pdm', entry['name'] + '.png'), cv2.IMREAD_UNCHANGED) / 65535.0
        np.testing.assert_allclose(pdm, expected, atol=1 / 65535)
        assert (pdm[mask == 0] > 0).any() == bool(entry.get('swap_base'))


def test_refusals_are_named(built, tmp_path):
    src = str(built / 'fgr')
    with pytest.raises(UserInputError, match='must differ from the source'):
        relabel_fgr(src, src, LABELS, progress=False)
    with pytest.raises(UserInputError, match='no samples'):
        relabel_fgr(str(tmp_path / 'empty'), str(tmp_path / 'x'), LABELS, progress=False)
    out = str(tmp_path / 'once')
    relabel_fgr(src, out, LABELS, progress=False)
    with pytest.raises(UserInputError, match='was relabelled from .* choose another output folder'):
        relabel_fgr(src, out, {'alpha': 1.0, 'normalize': {'type': 'max'}}, progress=False)
    with pytest.raises(UserInputError, match='not relabelled'):
        relabel_fgr(out, src, LABELS, progress=False)
    assert len(store.read_meta(out)) == 6  # nothing written is lost


def test_the_script_relabels_and_names_a_file_without_labels(built, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('relabel_fgr', os.path.join(ROOT, 'scripts', 'relabel_fgr.py'))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = str(tmp_path / 'cli')
    opt = os.path.join(ROOT, 'options', 'data', 'fgr_labels_pixel.yml')
    assert script.main(['-opt', opt, '--src', str(built / 'fgr'), '--out', out, '--no_progress']) == 0
    assert json.loads(capsys.readouterr().out)['relabelled_now'] == 6
    bad = tmp_path / 'bad.yml'
    bad.write_text('alpha: 1.0\n')
    assert script.main(['-opt', str(bad), '--src', str(built / 'fgr'), '--out', str(tmp_path / 'b')]) == 2
    assert 'give the label options as a mapping under labels' in capsys.readouterr().err
