"""options/test/*.yml: keys and paths checked, missing weights one line, one config end to end on tiny stand-ins."""
import glob
import inspect
import json
import os

import cv2
import numpy as np
import pytest
import yaml
from basicsr.utils.registry import ARCH_REGISTRY, METRIC_REGISTRY
from tests.helpers.diffusion import make_sd_folder

import finpercep_basicsr.archs  # noqa: F401
import finpercep_basicsr.models  # noqa: F401  (registers FinPercepSRTestModel and FinPercepPyIQA)
from finpercep_basicsr.metrics.pyiqa_metric import PYIQA_WEIGHTS, is_no_reference
from finpercep_basicsr.test import main as run_test_cli
from finpercep_basicsr.utils.option_check import OptionError, check_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'options', 'test', '*.yml')))
PANEL_FR = {'psnr', 'ssim', 'lpips', 'dists'}
PANEL_NR = {'musiq', 'maniqa', 'clipiqa', 'liqe'}
pytestmark = pytest.mark.usefixtures('one_thread')


def _materialise_paths(opt, root):
    """Create every dataset folder and weight path the config names, under ``root``."""
    for dataset in opt['datasets'].values():
        for key, value in dataset.items():
            if key.startswith('dataroot'):
                os.makedirs(os.path.join(root, value), exist_ok=True)
    for key, value in opt['network_g'].items():
        if key.endswith('_path') and isinstance(value, str):
            target = os.path.join(root, value)
            if os.path.splitext(value)[1]:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, 'wb').close()
            else:
                os.makedirs(target, exist_ok=True)


def test_there_is_a_config_per_generator_and_test_set():
    names = {os.path.basename(p) for p in CONFIGS}
    assert names == {f'test_{g}_{d}.yml' for g in ('osediff', 'seesr', 'stablesr')
                     for d in ('RealSR', 'DRealSR', 'RealLQ250')}


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_keys_and_paths_are_valid(path, tmp_path, monkeypatch):
    with open(path) as f:
        opt = yaml.safe_load(f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match='does not exist'):  # nothing there yet: the first missing path is named
        check_options(path, is_train=False)
    _materialise_paths(opt, str(tmp_path))
    check_options(path, is_train=False)  # registries (model, arch, dataset, metrics) and every path
    net = dict(opt['network_g'])
    arch = ARCH_REGISTRY.get(net.pop('type'))
    inspect.signature(arch).bind('sd', **{k: v for k, v in net.items() if k != 'sd_path'})
    assert net['inference'] == {'preset': 'released'}
    metrics = opt['val']['metrics']
    paired = 'dataroot_gt' in opt['datasets']['test_1']
    assert set(metrics) == (PANEL_FR | PANEL_NR if paired else PANEL_NR)
    for name, metric in metrics.items():
        assert metric['type'] in METRIC_REGISTRY
        if metric['type'] == 'FinPercepPyIQA':
            assert metric['name'] == name and name in PYIQA_WEIGHTS
            assert paired or is_no_reference(name)
        else:
            assert metric['crop_border'] == 4 and metric['test_y_channel'] is True


def _tiny_test_tree(root):
    """A RealSR-like folder (2 pairs, 8 px LQ / 32 px GT), a tiny SD base and an option file for it."""
    rng = np.random.default_rng(0)
    for sub, size in (('test_LR', 8), ('test_HR', 32)):
        os.makedirs(os.path.join(root, 'datasets', 'RealSR', sub))
        for i in range(2):
            cv2.imwrite(os.path.join(root, 'datasets', 'RealSR', sub, f'img{i}.png'),
                        rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    make_sd_folder(os.path.join(root, 'weights', 'sd'))
    with open(os.path.join(ROOT, 'options', 'test', 'test_osediff_RealSR.yml')) as f:
        opt = yaml.safe_load(f)
    opt['num_gpu'] = 0
    opt['network_g'].update(sd_path='weights/sd', osediff_path=None, prompt='a photo')
    # weight-free stand-ins for the learned panel (pyiqa's psnr and fsim need no download)
    opt['val']['metrics'] = {k: opt['val']['metrics'][k] for k in ('psnr', 'ssim')}
    opt['val']['metrics'].update(fsim={'type': 'FinPercepPyIQA', 'name': 'fsim', 'better': 'higher'})
    path = os.path.join(root, 'test_tiny.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    return path, opt


def test_a_config_runs_end_to_end_via_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path, _ = _tiny_test_tree(str(tmp_path))
    assert run_test_cli(['-opt', path]) == 0
    results = tmp_path / 'results' / 'test_osediff_RealSR'
    report = json.loads((results / 'metrics_RealSR.json').read_text())
    assert report['images'] == 2 and set(report['metrics']) == {'psnr', 'ssim', 'fsim'}
    assert all(np.isfinite(v) for v in report['metrics'].values())
    saved = sorted(os.listdir(results / 'visualization' / 'RealSR'))
    assert saved == ['img0_test_osediff_RealSR.png', 'img1_test_osediff_RealSR.png']
    assert cv2.imread(str(results / 'visualization' / 'RealSR' / saved[0])).shape == (32, 32, 3)


def test_missing_weights_and_test_sets_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # an empty pyiqa cache
    path, opt = _tiny_test_tree(str(tmp_path))
    opt['val']['metrics']['lpips'] = {'type': 'FinPercepPyIQA', 'name': 'lpips', 'better': 'lower'}
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    capsys.readouterr()
    assert run_test_cli(['-opt', path]) == 2
    captured = capsys.readouterr().err
    err = [line for line in captured.splitlines() if line.startswith('error:')]
    # one error line (stale BasicSR log handlers of earlier tests may add logging noise to stderr here)
    assert len(err) == 1 and 'LPIPS_v0.1_alex-df73285e.pth' in err[0]
    assert os.path.join('torch_home', 'hub', 'pyiqa') in err[0] and 'val.metrics.lpips' in err[0]
    repo_config = os.path.join(ROOT, 'options', 'test', 'test_osediff_RealSR.yml')
    assert run_test_cli(['-opt', repo_config]) == 2  # the test set is here, the released weights are not
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'network_g.sd_path: weights/stable-diffusion-2-1-base does not exist' in err[0]
    os.makedirs('empty')
    monkeypatch.chdir('empty')
    assert run_test_cli(['-opt', repo_config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'datasets/RealSR/test_HR does not exist' in err[0]
