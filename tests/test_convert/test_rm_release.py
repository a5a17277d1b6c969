"""convert/rm_release.py: a release file keeps the chosen weights, fits its option file, and carries its sha256."""
import hashlib

import pytest
import torch
import yaml

from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.convert.rm_release import export_rm_release
from finpercep_basicsr.evaluation.score import load_reward_net
from finpercep_basicsr.utils.errors import UserInputError

TINY = dict(encoder='conv', channels=[8, 8, 16, 16], stage=3, decoder_width=8, refine_ch=4, mlp_hidden=16)


def test_export_keeps_the_ema_weights_checked_against_the_option_file(tmp_path):
    opt = tmp_path / 'rm.yml'
    opt.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', **TINY)}))
    raw, ema = FinPercepRewardNet(**TINY), FinPercepRewardNet(**TINY)
    torch.save({'params': raw.state_dict(), 'params_ema': ema.state_dict()}, tmp_path / 'train.pth')
    out = tmp_path / 'release' / 'rm.pth'
    digest, size = export_rm_release(str(tmp_path / 'train.pth'), str(opt), str(out))
    saved = torch.load(out, weights_only=True)
    assert list(saved) == ['params'] and size == out.stat().st_size
    for key, value in ema.state_dict().items():
        assert torch.equal(saved['params'][key], value)
    assert (tmp_path / 'release' / 'rm.pth.sha256').read_text().split() == [digest, 'rm.pth']
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    other = tmp_path / 'other.yml'
    other.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', **dict(TINY, stage=2))}))
    with pytest.raises(UserInputError, match='train.pth'):
        export_rm_release(str(tmp_path / 'train.pth'), str(other), str(out))
    other.write_text(yaml.safe_dump({'name': 'no network'}))
    with pytest.raises(UserInputError, match='no network_reward.type'):
        export_rm_release(str(tmp_path / 'train.pth'), str(other), str(out))


def test_half_export_stores_float16_and_scores_like_the_fp32_weights(tmp_path):
    opt = tmp_path / 'rm.yml'
    opt.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', **TINY),
                                   'path': {'pretrain_network_reward': str(tmp_path / 'half.pth')}}))
    net = FinPercepRewardNet(**TINY).eval()
    torch.save({'params_ema': net.state_dict()}, tmp_path / 'train.pth')
    export_rm_release(str(tmp_path / 'train.pth'), str(opt), str(tmp_path / 'half.pth'), half=True)
    saved = torch.load(tmp_path / 'half.pth', weights_only=True)['params']
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    loaded, _ = load_reward_net(opt=str(opt))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net(img), loaded(img)
    assert torch.allclose(a['score'], b['score'], atol=1e-2) and torch.allclose(a['pdm'], b['pdm'], atol=1e-2)
