"""The shipped reward model and its judge: each checkpoint matches its sha256, loads strictly from its option file,
scores a real photo from the repository root (a sharpened copy lower, its map brighter), and a mismatched
checkpoint exits 2."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from tests.helpers.opt import REPO
from skimage import data as skdata

from finpercep_basicsr.evaluation.score import load_reward_net
from finpercep_basicsr.evaluation.score import main as score_main

OPTION_FILE = os.path.join('options', 'pretrained', 'finpercep_rm.yml')
JUDGE_FILE = os.path.join('options', 'pretrained', 'finpercep_rm_judge.yml')
SHIPPED = pytest.mark.parametrize('option_file', [OPTION_FILE, JUDGE_FILE], ids=['rm', 'judge'])


def _option(option_file=OPTION_FILE):
    with open(os.path.join(REPO, option_file)) as f:
        return yaml.safe_load(f)


@SHIPPED
def test_checkpoint_matches_its_sha256(option_file):
    path = os.path.join(REPO, _option(option_file)['path']['pretrain_network_reward'])
    with open(path + '.sha256') as f:
        expected = f.read().split()[0]
    with open(path, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest() == expected
    assert os.path.getsize(path) <= 25 * 2 ** 20


@pytest.mark.parametrize('option_file, sees_oversharpening', [(OPTION_FILE, True), (JUDGE_FILE, False)],
                         ids=['rm', 'judge'])
def test_scores_a_real_photo_from_the_repository_root(tmp_path, monkeypatch, option_file, sees_oversharpening):
    monkeypatch.chdir(REPO)  # the option file's paths are relative to the repository root
    photo = skdata.astronaut()[100:292, 150:342]
    blurred = cv2.GaussianBlur(photo, (0, 0), 1.0)
    sharpened = np.clip(photo + 3.0 * (photo.astype(np.float32) - blurred), 0, 255).astype(np.uint8)
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name, img in (('photo.png', photo), ('sharpened.png', sharpened)):
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert score_main(['--opt', option_file, str(folder), '--out', str(tmp_path / 'scored')]) == 0
    with open(tmp_path / 'scored' / 'scores.json') as f:
        scores = {os.path.basename(r['file']): r for r in json.load(f)['results']}
    assert all(np.isfinite(r['score']) for r in scores.values())
    net, _ = load_reward_net(opt=option_file)  # strict: every key of the checkpoint fits the option file
    with torch.no_grad():
        maps = [net(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)['pdm'].mean().item()
                for img in (photo, sharpened)]
    if sees_oversharpening:  # the judge's families are disjoint from the RM's: no over-sharpening (model card)
        assert scores['photo.png']['score'] > scores['sharpened.png']['score']
        assert maps[1] > maps[0]


@SHIPPED
def test_a_checkpoint_of_another_architecture_exits_2(tmp_path, monkeypatch, capsys, option_file):
    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    monkeypatch.chdir(REPO)
    other = FinPercepRewardNet(stage=2, pretrained=False)
    path = tmp_path / 'other.pth'
    torch.save({'params': other.state_dict()}, path)
    img = tmp_path / 'a.png'
    cv2.imwrite(str(img), np.full((64, 64, 3), 128, np.uint8))
    assert score_main(['--opt', option_file, '--ckpt', str(path), str(img), '--out', str(tmp_path / 'o')]) == 2
    assert str(path) in capsys.readouterr().err


def test_export_keeps_the_ema_weights_checked_against_the_option_file(tmp_path, capsys):
    from tests.helpers.opt import load_script

    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    tiny = dict(encoder='conv', channels=[8, 8, 16, 16], stage=3, decoder_width=8, refine_ch=4, mlp_hidden=16)
    opt = tmp_path / 'rm.yml'
    opt.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', **tiny)}))
    raw, ema = FinPercepRewardNet(**tiny), FinPercepRewardNet(**tiny)
    torch.save({'params': raw.state_dict(), 'params_ema': ema.state_dict()}, tmp_path / 'train.pth')
    export = load_script('export_rm_weights')
    out = tmp_path / 'release' / 'rm.pth'
    assert export.main(['--ckpt', str(tmp_path / 'train.pth'), '--opt', str(opt), '--out', str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert list(saved) == ['params']
    for key, value in ema.state_dict().items():
        assert torch.equal(saved['params'][key], value)
    digest = (tmp_path / 'release' / 'rm.pth.sha256').read_text().split()
    assert digest == [hashlib.sha256(out.read_bytes()).hexdigest(), 'rm.pth']
    other = tmp_path / 'other.yml'
    other.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', **dict(tiny, stage=2))}))
    assert export.main(['--ckpt', str(tmp_path / 'train.pth'), '--opt', str(other), '--out', str(out)]) == 2
    assert 'train.pth' in capsys.readouterr().err


def test_half_export_stores_float16_and_scores_like_the_fp32_weights(tmp_path):
    from tests.helpers.opt import load_script

    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    tiny = dict(encoder='conv', channels=[8, 8, 16, 16], stage=3, decoder_width=8, refine_ch=4, mlp_hidden=16)
    opt = tmp_path / 'rm.yml'
    opt.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', **tiny),
                                   'path': {'pretrain_network_reward': str(tmp_path / 'half.pth')}}))
    net = FinPercepRewardNet(**tiny).eval()
    torch.save({'params_ema': net.state_dict()}, tmp_path / 'train.pth')
    export = load_script('export_rm_weights')
    assert export.main(['--ckpt', str(tmp_path / 'train.pth'), '--opt', str(opt), '--out', str(tmp_path / 'half.pth'),
                        '--half']) == 0
    saved = torch.load(tmp_path / 'half.pth', weights_only=True)['params']
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    loaded, _ = load_reward_net(opt=str(opt))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net(img), loaded(img)
    assert torch.allclose(a['score'], b['score'], atol=1e-2) and torch.allclose(a['pdm'], b['pdm'], atol=1e-2)
