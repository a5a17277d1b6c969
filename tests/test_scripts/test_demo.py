"""The demo end to end at the tiny size: every artifact exists, loads, and the report agrees with the data."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from opt_fixture import REPO


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / 'demo'
    cmd = [sys.executable, os.path.join(REPO, 'scripts', 'demo.py'), '--tiny', '--out', str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-4000:]

    # checkpoints of every training step load
    for stage in range(4):
        ckpt = torch.load(out / 'experiments' / f'FinPercepRM_stage{stage}' / 'models' / 'net_reward_latest.pth',
                          weights_only=True)
        assert 'params_ema' in ckpt
    for name in ('global', 'finpercep', 'finpercep_ccl'):
        ckpt = torch.load(out / 'experiments' / f'RLHF_RealESRGANx4_{name}' / 'models' / 'net_g_latest.pth',
                          weights_only=True)
        assert 'params' in ckpt and any(k.startswith('body.') for k in ckpt['params'])
    assert 'params_ema' in torch.load(out / 'weights' / 'RealESRGAN_x4plus.pth', weights_only=True)

    # the report's table is the evaluation JSON, run by run
    with open(out / 'eval' / 'results.json') as f:
        evaluation = json.load(f)
    assert set(evaluation['runs']) == {'realesrgan_x4plus', 'global_only', 'finpercep', 'finpercep_ccl'}
    md = (out / 'report.md').read_text()
    for run_name, run in evaluation['runs'].items():
        row = re.search(rf'^\| {run_name} \|(.*)\|$', md, re.M)
        assert row, run_name
        cells = [float(c.strip().strip('*')) for c in row.group(1).split('|')]
        assert cells == pytest.approx(list(run['mean'].values()), abs=1e-4)
    html = (out / 'report.html').read_text()
    assert html.count('data:image/png;base64,') >= 3  # curves + one grid per held-out image
    for png in (out / 'report_files').iterdir():
        assert png.stat().st_size > 1000

    # a rerun skips every finished step
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count('done already, skipped') == 12
    assert (out / 'commands.sh').read_text().count('finpercep_basicsr.train') == 7
