"""The reward model's training step from cached frozen features equals the uncached step; bf16 autocast; the cache."""
import glob
import os

import pytest
import torch
from tests.helpers.opt import run_module, write_options
from tests.test_models.test_rm_model import _batch, _opt

from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.models.feature_cache import FeatureCache
from finpercep_basicsr.models.finpercep_rm_model import FinPercepRMModel
from finpercep_basicsr.utils.errors import UserInputError

FROZEN = dict(freeze_encoder=True, encoder_trainable=['levels.3.*'])


def _model(tmp_path, fgr_folder, **train):
    torch.manual_seed(0)
    return FinPercepRMModel(_opt(tmp_path, fgr_folder, **train))


def _trainable(model):
    return {n: p for n, p in model.net_reward.named_parameters() if p.requires_grad}


@pytest.mark.parametrize('texture_stats', [True, False])
def test_the_cached_step_gives_the_uncached_losses_gradients_and_weights(tmp_path, fgr_folder, texture_stats):
    plain = _model(tmp_path / 'a', fgr_folder, **FROZEN)
    cached = _model(tmp_path / 'b', fgr_folder, **FROZEN, feature_cache={'max_gb': 1, 'texture_stats': texture_stats})
    assert cached.get_bare_model(cached.net_reward).frozen_steps() == 4  # the stem and levels 0-2; level 3 trains
    _, batch = _batch(fgr_folder)
    for step in (1, 2):  # step 1 fills the cache, step 2 reads it
        for model in (plain, cached):
            model.feed_data(batch)
            model.optimize_parameters(step)
        for key, value in plain.log_dict.items():
            assert cached.log_dict[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)
        grads, weights = _trainable(plain), _trainable(cached)
        assert set(grads) == set(weights) and any(n.startswith('encoder.levels.3') for n in grads)
        for name, p in grads.items():
            torch.testing.assert_close(weights[name].grad, p.grad, rtol=1e-5, atol=1e-7, msg=f'{step} {name}')
            torch.testing.assert_close(weights[name], p, rtol=1e-5, atol=1e-7, msg=f'{step} {name}')
    assert cached.feature_cache.hit_rate() == 0.5 and cached.log_dict['feature_cache_hit_rate'] == 0.5
    assert len(cached.feature_cache) == 3 * batch['gt'].size(0)  # SR, syn and GT of each sample
    assert all((item['stats'] is not None) == texture_stats for item in cached.feature_cache.items.values())


def test_efficientnet_lite_split_at_its_first_trainable_block_gives_the_same_scores_maps_and_gradients():
    torch.manual_seed(0)
    net = FinPercepRewardNet(stage=3, decoder_width=16, refine_ch=4, mlp_hidden=16).freeze_encoder(
        True, ['blocks.1[1-5].*'])
    assert net.frozen_steps() == 12  # the stem and blocks 0-10
    x = torch.rand(2, 3, 64, 80)  # padded to 96 wide inside
    ref = net(x)
    loss = ref['score'].sum() + ref['pdm'].mean()
    grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad])
    out = net(x, frozen=net.frozen_features(x))
    torch.testing.assert_close(out['score'], ref['score'])
    torch.testing.assert_close(out['pdm'], ref['pdm'])
    cached_grads = torch.autograd.grad(out['score'].sum() + out['pdm'].mean(),
                                       [p for p in net.parameters() if p.requires_grad])
    for a, b in zip(grads, cached_grads):
        torch.testing.assert_close(b, a)
    net.freeze_encoder(True, ['blocks.*'])
    with pytest.raises(ValueError, match='frozen features of 12 encoder steps; 1 are frozen now'):
        net(x, frozen={'steps': 12, 'hidden': None, 'levels': [], 'stats': None})


def test_the_cache_computes_only_misses_and_drops_the_least_recently_used_past_its_budget():
    calls = []

    def compute(images):
        calls.append(images.size(0))
        return {'steps': 1, 'hidden': images * 2, 'levels': [images + 1], 'stats': None}

    one = 2 * 3 * 4 * 4 * 4  # bytes of one sample: hidden + one level, float32 (3, 4, 4) each
    cache = FeatureCache(max_bytes=2 * one)
    images = torch.arange(3 * 3 * 4 * 4, dtype=torch.float32).view(3, 3, 4, 4)
    out = cache.batch(['a', 'b', 'c'], images, compute)
    torch.testing.assert_close(out['hidden'], images * 2)
    torch.testing.assert_close(out['levels'][0], images + 1)
    assert calls == [3] and list(cache.items) == ['b', 'c'] and cache.bytes == 2 * one  # 'a' dropped
    out = cache.batch(['c', 'a'], images[[2, 0]], compute)
    assert calls == [3, 1] and list(cache.items) == ['c', 'a']  # 'c' used, so 'b' went
    torch.testing.assert_close(out['hidden'], images[[2, 0]] * 2)
    assert cache.hit_rate() == pytest.approx(1 / 5)
    tiny = FeatureCache(max_bytes=one - 1)
    tiny.batch(['a'], images[:1], compute)
    assert len(tiny) == 0 and tiny.bytes == 0  # larger than the whole budget: never stored
    # the hidden state that is also the last level is kept once
    shared = FeatureCache(max_bytes=10 * one)
    shared.batch(['a'], images[:1], lambda x: (lambda h: {'steps': 1, 'hidden': h, 'levels': [x + 1, h],
                                                          'stats': None})(x * 2))
    kept = shared.items['a']
    assert kept['hidden'] is kept['levels'][1] and shared.bytes == one
    out = shared.batch(['a'], images[:1], compute)
    assert out['hidden'] is out['levels'][1]
    torch.testing.assert_close(out['hidden'], images[:1] * 2)


@pytest.mark.parametrize('train, message', [
    (dict(feature_cache={'max_gb': 1}), 'train.feature_cache: nothing to keep'),
    (dict(FROZEN, feature_cache={'gb': 1}), 'train.feature_cache: expected {max_gb: GB, texture_stats: bool}'),
    (dict(feature_cache={'max_gb': 1, 'texture_stats': False}), 'train.feature_cache: nothing to keep'),
    (dict(autocast='fp16'), "train.autocast: 'fp16'; use bf16"),
])
def test_bad_cache_and_autocast_options_name_the_key(tmp_path, fgr_folder, train, message):
    opt = _opt(tmp_path, fgr_folder, **train)
    opt['network_reward']['texture'] = False
    with pytest.raises(UserInputError, match=message.replace('{', r'\{').replace('}', r'\}')):
        FinPercepRMModel(opt)


def test_bf16_autocast_trains_close_to_float32(tmp_path, fgr_folder):
    plain = _model(tmp_path / 'a', fgr_folder, **FROZEN)
    bf16 = _model(tmp_path / 'b', fgr_folder, **FROZEN, autocast='bf16', feature_cache={'max_gb': 1})
    _, batch = _batch(fgr_folder)
    for model in (plain, bf16):
        model.feed_data(batch)
        model.optimize_parameters(1)
    for key, value in plain.log_dict.items():
        assert bf16.log_dict[key] == pytest.approx(value, rel=0.05, abs=0.02), key
    assert all(torch.isfinite(p).all() for p in _trainable(bf16).values())


@pytest.mark.slow
def test_torchrun_trains_with_the_cache_and_bf16(tmp_path, fgr_folder):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    opt = write_options(tmp_path / 'opt.yml', dataroot=fgr_folder, train__total_iter=4, val=None,
                        train__freeze_encoder=True, train__encoder_trainable=['levels.3.*'],
                        train__feature_cache={'max_gb': 1}, train__autocast='bf16',
                        datasets__train__use_hflip=False, datasets__train__use_rot=False,
                        datasets__train__gt_size=None)
    result = run_module(['torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(port),
                         '-m', 'finpercep_basicsr.train', '-opt', opt, '--launcher', 'pytorch'],
                        cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'test_rm_tiny'
    log = open(glob.glob(str(exp / 'train_*.log'))[0]).read()
    assert 'World size (gpu number): 2' in log and 'feature_cache_hit_rate' in log
    assert os.path.isfile(exp / 'models' / 'net_reward_latest.pth')
