"""evaluation/sr_evaluation.py (scripts/evaluate_sr.py): runs side by side, per-image and mean values, run specs,
clear errors."""
import json
import os
import shutil

import pytest
import torch
import yaml
from tests.helpers.rlhf import TINY_RM, make_paired_folder, make_reward_checkpoint, write_rlhf_options

from finpercep_basicsr.evaluation.sr_evaluation import main
from finpercep_basicsr.utils.errors import UserInputError


@pytest.fixture
def runs(tmp_path):
    data = make_paired_folder(tmp_path / 'data', num=2, size=48, identical=False)
    rm = make_reward_checkpoint(tmp_path / 'rm.pth')
    opt_path = write_rlhf_options(tmp_path / 'opt.yml', data, rm)
    from basicsr.archs.rrdbnet_arch import RRDBNet
    torch.manual_seed(0)
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8, scale=4)
    exp = tmp_path / 'experiments' / 'tiny'
    os.makedirs(exp / 'models')
    ckpt = exp / 'models' / 'net_g_latest.pth'
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, ckpt)
    shutil.copy(opt_path, exp / 'opt.yml')
    with open(tmp_path / 'reward.yml', 'w') as f:
        yaml.safe_dump({'network_opt': TINY_RM, 'pretrain_path': rm}, f)
    return tmp_path, data, exp, ckpt, opt_path, net


def test_runs_side_by_side(runs, capsys):
    tmp_path, data, exp, ckpt, opt_path, net = runs
    out = tmp_path / 'out'
    assert main(['--lq', f'{data}/lq', '--gt', f'{data}/gt', '--run', 'bicubic=bicubic', '--run', f'dir={exp}',
                 '--run', f'pth={ckpt}', '--network-opt', opt_path, '--reward-opt', str(tmp_path / 'reward.yml'),
                 '--pdm-threshold', '0.5', '--save-images', '--out', str(out)]) == 0
    assert sorted(os.listdir(out / 'dir')) == ['0000.png', '0001.png']
    res = json.load(open(out / 'results.json'))
    assert res['images'] == 2 and list(res['runs']) == ['bicubic', 'dir', 'pth']
    cols = {'psnr', 'ssim', 'fsim', 'vif', 'gmsd', 'rm_score', 'pdm_rate'}
    for run in res['runs'].values():
        assert set(run['mean']) == cols and list(run['per_image']) == ['0000', '0001']
        for c in cols:
            assert abs(run['mean'][c] - sum(r[c] for r in run['per_image'].values()) / 2) < 1e-9
        assert all(0 <= r['pdm_rate'] <= 1 for r in run['per_image'].values())
    assert res['runs']['dir']['mean'] == res['runs']['pth']['mean']  # the same checkpoint two ways
    # bicubic of a smooth image beats a random tiny generator on every full-reference metric
    b, t = res['runs']['bicubic']['mean'], res['runs']['dir']['mean']
    assert b['psnr'] > t['psnr'] and b['ssim'] > t['ssim'] and b['gmsd'] < t['gmsd']
    table = open(out / 'results.md').read()
    assert '| run | psnr ↑ | ssim ↑ | fsim ↑ | vif ↑ | gmsd ↓ | rm_score ↑ | pdm_rate ↓ |' in table
    assert '| bicubic |' in capsys.readouterr().out


def test_pdm_rate_follows_the_threshold(runs):
    tmp_path, data, exp, *_ = runs
    rates = []
    for thr in ('0.0', '1.0'):
        out = tmp_path / f'out{thr}'
        main(['--lq', f'{data}/lq', '--gt', f'{data}/gt', '--run', f'dir={exp}', '--metrics', 'psnr',
              '--reward-opt', str(tmp_path / 'reward.yml'), '--pdm-threshold', thr, '--out', str(out)])
        rates.append(json.load(open(out / 'results.json'))['runs']['dir']['mean']['pdm_rate'])
    assert rates == [1.0, 0.0]


def test_tiled_inference_matches_whole_image(runs):
    from finpercep_basicsr.evaluation.sr_evaluation import load_generator, super_resolve
    *_, opt_path, _ = runs
    policy, scale = load_generator(str(runs[3]), opt_path)
    torch.manual_seed(0)
    with torch.no_grad():  # livelier weights than BasicSR's 0.1-scaled init, so the output has structure
        for p in policy.parameters():
            p.normal_(0, 0.15)
        policy.net.conv_last.bias.fill_(0.5)
    lq = torch.rand(1, 3, 20, 28)
    whole = super_resolve(policy, scale, lq)
    assert whole.std() > 0.01  # not a constant image, or the comparison below would prove nothing
    # a pad covering the receptive field (17 LQ convs for a 1-block RRDBNet) reproduces the whole
    # image; a short pad leaves seams
    exact = super_resolve(policy, scale, lq, tile=8, tile_pad=20)
    assert exact.shape == (1, 3, 80, 112) and torch.allclose(whole, exact, atol=1e-5)
    assert not torch.allclose(whole, super_resolve(policy, scale, lq, tile=8, tile_pad=1), atol=1e-5)


def test_bad_inputs_are_named(runs):
    tmp_path, data, exp, ckpt, *_ = runs
    with pytest.raises(UserInputError, match=f'image folder not found: {tmp_path / "nope"}'):
        main(['--lq', str(tmp_path / 'nope'), '--gt', f'{data}/gt', '--run', 'b=bicubic', '--out', str(tmp_path / 'o')])
    with pytest.raises(UserInputError, match='needs --network-opt'):
        main(['--lq', f'{data}/lq', '--gt', f'{data}/gt', '--run', f'x={ckpt}', '--out', str(tmp_path / 'o')])
    with pytest.raises(UserInputError, match='expected NAME=SPEC'):
        main(['--lq', f'{data}/lq', '--gt', f'{data}/gt', '--run', 'nospec', '--out', str(tmp_path / 'o')])
