"""FinPercep reward losses: the formula, map reductions, run-time weights, gradients, errors."""
import urllib.error

import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.losses import build_loss
from tests.helpers.rlhf import TINY_RM, make_reward_checkpoint

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.losses import finpercep_global_iqa_loss as global_iqa
from finpercep_basicsr.losses.finpercep_global_iqa_loss import FinPercepGlobalIQALoss, IQAMetricUnavailableError
from finpercep_basicsr.losses.finpercep_reward_loss import FinPercepRewardLoss, pdm_artifact_rate, reduce_map
from finpercep_basicsr.losses.loss_utils import gaussian_lowpass
from finpercep_basicsr.utils.errors import UserInputError


@pytest.fixture
def rm_ckpt(tmp_path):
    return make_reward_checkpoint(tmp_path / 'rm.pth', seed=3)


def _loss(rm_ckpt, **kw):
    return FinPercepRewardLoss(network_opt=dict(TINY_RM), pretrain_path=rm_ckpt, **kw)


def test_loss_is_negative_weighted_reward(rm_ckpt):
    torch.manual_seed(0)
    sr = torch.rand(3, 3, 32, 32)
    loss_fn = _loss(rm_ckpt, lambda_score=0.7, lambda_map=2.0, map_reduce='max')
    out = loss_fn.net(sr)
    expected = -(0.7 * out['score'].mean() + 2.0 * (1 - out['pdm'].flatten(1).amax(1)).mean())
    loss, terms = loss_fn(sr, return_terms=True)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert terms['pdm'].shape == (3, 1, 32, 32) and terms['reward'].shape == (3,)
    assert not terms['reward'].requires_grad
    # checkpoint weights were loaded (seed 3), not the random init of the loss (seed 0)
    assert torch.equal(loss_fn.net.state_dict()['score_head.0.weight'],
                       torch.load(rm_ckpt, weights_only=True)['params']['score_head.0.weight'])
    per_image = _loss(rm_ckpt, lambda_score=0.7, lambda_map=2.0, reduction='none')(sr)
    assert per_image.shape == (3,) and torch.allclose(per_image.mean(), loss, atol=1e-6)


def test_set_weights_changes_the_reward_at_run_time(rm_ckpt):
    sr = torch.rand(2, 3, 32, 32)
    loss_fn = _loss(rm_ckpt)
    loss_fn.set_weights(lambda_score=1.0, lambda_map=0.0)
    assert torch.allclose(loss_fn(sr), -loss_fn.net(sr)['score'].mean(), atol=1e-6)
    loss_fn.set_weights(lambda_score=0.0, lambda_map=1.0)
    assert torch.allclose(loss_fn(sr), -(1 - loss_fn.net(sr)['pdm'].flatten(1).amax(1)).mean(), atol=1e-6)
    loss_fn.set_weights(lambda_map=3.0)  # None keeps the other weight
    assert (loss_fn.lambda_score, loss_fn.lambda_map) == (0.0, 3.0)


def test_map_reductions():
    pdm = torch.rand(2, 1, 16, 16) * 0.5
    pdm[0, 0, 3, 4] = 0.9
    assert torch.equal(reduce_map(pdm, 'max'), pdm.flatten(1).amax(1))
    assert torch.allclose(reduce_map(pdm, 'topk', topk_ratio=1 / 256), pdm.flatten(1).amax(1))
    top4 = pdm.flatten(1).sort(1, descending=True).values[:, :4].mean(1)
    assert torch.allclose(reduce_map(pdm, 'topk', topk_ratio=4 / 256), top4)
    mean, peak = pdm.flatten(1).mean(1), pdm.flatten(1).amax(1)
    smooth = reduce_map(pdm, 'smooth_max', temperature=0.05)
    assert torch.all(smooth <= peak + 1e-6) and torch.all(smooth >= mean - 1e-6)
    assert torch.allclose(reduce_map(pdm, 'smooth_max', temperature=1e-3), peak, atol=0.01)
    assert torch.allclose(reduce_map(pdm, 'smooth_max', temperature=100.0), mean, atol=1e-3)
    with pytest.raises(UserInputError, match='map_reduce'):
        reduce_map(pdm, 'median')
    assert torch.allclose(pdm_artifact_rate(pdm, 0.45), (pdm > 0.45).float().flatten(1).mean(1))


def test_gradients_reach_the_generator_not_the_reward_model(rm_ckpt):
    torch.manual_seed(0)
    gen = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=8, scale=4)
    loss_fn = build_loss({'type': 'FinPercepRewardLoss', 'network_opt': dict(TINY_RM), 'pretrain_path': rm_ckpt,
                          'map_reduce': 'smooth_max'})
    loss_fn(gen(torch.rand(2, 3, 8, 8)).clamp(0, 1)).backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.net.parameters())


def test_reward_net_stays_in_eval_mode(rm_ckpt):
    loss_fn = _loss(rm_ckpt).train()
    assert loss_fn.training and not loss_fn.net.training


def test_nonfinite_input_gives_nan_loss_connected_to_the_graph(rm_ckpt):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    sr = x * torch.tensor(float('inf'))
    loss, terms = _loss(rm_ckpt)(sr, return_terms=True)
    assert torch.isnan(loss) and torch.isnan(terms['reward']).all()
    loss.backward()
    assert x.grad is not None


def test_bad_options_and_checkpoints_are_named(tmp_path, rm_ckpt):
    with pytest.raises(UserInputError, match='map_reduce'):
        _loss(rm_ckpt, map_reduce='mean')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        _loss(str(tmp_path / 'missing.pth'))
    with pytest.raises(UserInputError, match=r'rm\.pth \[params(_ema)?\] does not match FinPercepRewardNet'):
        FinPercepRewardLoss(network_opt={**TINY_RM, 'decoder_width': 16}, pretrain_path=rm_ckpt)
    torch.save({'weights': {}}, tmp_path / 'w.pth')
    with pytest.raises(UserInputError, match="w.pth has no 'params_ema' entry"):
        _loss(str(tmp_path / 'w.pth'), param_key='params_ema')


def test_global_loss_from_a_reward_model_uses_only_the_score(rm_ckpt):
    sr = torch.rand(2, 3, 32, 32)
    loss_fn = FinPercepGlobalIQALoss(metric='rm', network_opt=dict(TINY_RM), pretrain_path=rm_ckpt)
    loss, terms = loss_fn(sr, return_terms=True)
    assert torch.allclose(loss, -loss_fn.net(sr)['score'].mean(), atol=1e-6)
    assert 'pdm' in terms and 'map_peak' not in terms


def test_global_loss_from_pyiqa_full_reference_metric():
    gt = torch.rand(1, 3, 32, 32)
    x = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).requires_grad_(True)
    psnr = FinPercepGlobalIQALoss(metric='pyiqa:psnr')
    loss = psnr(x, gt)
    loss.backward()
    assert loss < 0 and x.grad.abs().sum() > 0  # reward = PSNR (higher is better)
    gmsd = FinPercepGlobalIQALoss(metric='pyiqa:gmsd')  # lower-is-better metric: reward = -GMSD
    assert gmsd(x.detach(), gt) > 0 and gmsd.sign == -1.0
    with pytest.raises(UserInputError, match='full-reference'):
        psnr(x)


def test_pyiqa_reward_is_per_image_in_a_batch():
    gt = torch.rand(3, 3, 32, 32)
    x = (gt + torch.tensor([0.02, 0.1, 0.3]).view(3, 1, 1, 1) * torch.randn_like(gt)).clamp(0, 1)
    psnr = FinPercepGlobalIQALoss(metric='pyiqa:psnr')
    batch = psnr.rewards(x, gt)['score']
    single = torch.stack([psnr.rewards(x[i:i + 1], gt[i:i + 1])['score'][0] for i in range(3)])
    torch.testing.assert_close(batch, single)
    assert batch[0] > batch[1] > batch[2]


def test_pyiqa_metric_needing_a_download_fails_clearly(monkeypatch):
    import pyiqa

    def offline(*args, **kwargs):
        raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(pyiqa, 'create_metric', offline)
    with pytest.raises(IQAMetricUnavailableError, match="'musiq'.*need their weights"):
        global_iqa.FinPercepGlobalIQALoss(metric='pyiqa:musiq')
    with pytest.raises(UserInputError, match='no metric'):
        global_iqa.FinPercepGlobalIQALoss(metric='pyiqa:not_a_metric')
    with pytest.raises(UserInputError, match='rm'):
        global_iqa.FinPercepGlobalIQALoss(metric='clipiqa')



@pytest.mark.parametrize('make', [lambda ckpt, **kw: _loss(ckpt, **kw),
                                  lambda ckpt, **kw: FinPercepGlobalIQALoss(network_opt=dict(TINY_RM),
                                                                            pretrain_path=ckpt, **kw)],
                         ids=['finpercep', 'global'])
def test_detach_lowpass_keeps_the_reward_and_removes_its_colour_gradient(rm_ckpt, make):
    torch.manual_seed(1)
    sr = torch.rand(2, 3, 32, 32)
    grads = {}
    for detach in (None, 'mean', 2.0):
        x = sr.clone().requires_grad_(True)
        loss = make(rm_ckpt, detach_lowpass=detach)(x)
        loss.backward()
        grads[detach] = (loss.detach(), x.grad)
    plain = grads[None][1]
    assert torch.allclose(grads['mean'][0], grads[None][0], atol=1e-6)  # same value ...
    assert torch.allclose(grads[2.0][0], grads[None][0], atol=1e-6)
    plain_mean = plain.mean(dim=(2, 3))
    assert plain_mean.abs().max() > 0  # the tiny RM does push the colour ...
    for detach in ('mean', 2.0):  # ... not with the option
        assert grads[detach][1].mean(dim=(2, 3)).abs().max() < 1e-3 * plain_mean.abs().max()
    # 'mean': the plain gradient minus its per-channel mean
    centred = plain - plain.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(grads['mean'][1], centred, rtol=1e-4, atol=1e-5 * centred.abs().max().item())
    # a Gaussian sigma: the plain gradient minus its blur (the kernel is symmetric; away from the borders,
    # where reflection makes the transpose differ), so its low frequencies go, not only its mean
    inner = (..., slice(8, -8), slice(8, -8))
    high = plain - gaussian_lowpass(plain, 2.0)
    assert torch.allclose(grads[2.0][1][inner], high[inner], rtol=1e-3, atol=1e-4 * high.abs().max().item())


def test_gaussian_lowpass_keeps_constants_and_smooths():
    flat = torch.full((1, 3, 16, 20), 0.3)
    assert torch.allclose(gaussian_lowpass(flat, 2.0), flat, atol=1e-6)
    noise = torch.rand(1, 3, 16, 20)
    low = gaussian_lowpass(noise, 2.0)
    assert low.shape == noise.shape and low.std() < 0.3 * noise.std()


@pytest.mark.parametrize('bad', [0, -1.0, 'median', True])
def test_bad_detach_lowpass_is_named(rm_ckpt, bad):
    with pytest.raises(UserInputError, match='detach_lowpass'):
        _loss(rm_ckpt, detach_lowpass=bad)


def test_reference_margin_caps_each_image_at_its_reference_plus_margin(rm_ckpt):
    """Images at or above R(reference) + margin get neither reward nor gradient; the others keep both."""
    torch.manual_seed(0)
    reference = torch.rand(2, 3, 32, 32)
    plain = _loss(rm_ckpt, lambda_map=0.5, reduction='none')
    capped = _loss(rm_ckpt, lambda_map=0.5, reduction='none', reference_margin=0.0)
    r_ref = plain.rewards(reference)['reward']
    # image 0 is the reference itself (at its ceiling), image 1 a different image scored below or above it
    sr = torch.stack([reference[0], torch.rand(3, 32, 32)]).requires_grad_(True)
    loss, terms = capped(sr, return_terms=True, reference=reference)
    r_sr = plain.rewards(sr)['reward'].detach()
    below = bool(r_sr[1] < r_ref[1])
    assert terms['capped'].tolist() == [1.0, 0.0 if below else 1.0]
    assert torch.allclose(loss, -torch.where(r_sr < r_ref, r_sr, r_ref), atol=1e-6)
    assert torch.allclose(terms['reward'], r_sr, atol=1e-6)  # logged before the ceiling
    loss.sum().backward()
    assert sr.grad[0].abs().max() == 0  # at the ceiling: no gradient
    assert (sr.grad[1].abs().max() > 0) == below
    # a margin no image reaches changes nothing
    far = _loss(rm_ckpt, lambda_map=0.5, reference_margin=100.0)
    assert torch.allclose(far(sr, reference=reference), _loss(rm_ckpt, lambda_map=0.5)(sr), atol=1e-6)


def test_reference_margin_is_a_number_and_scoring_without_a_reference_is_uncapped(rm_ckpt):
    sr = torch.rand(1, 3, 32, 32)
    assert torch.equal(_loss(rm_ckpt, reference_margin=-1.0)(sr), _loss(rm_ckpt)(sr))
    for bad in ('0.1x', True):
        with pytest.raises(UserInputError, match='reference_margin must be a number'):
            _loss(rm_ckpt, reference_margin=bad)


def test_grouped_samples_are_capped_by_the_reference_of_their_own_input(rm_ckpt):
    """G consecutive samples per input share that input's reference (scored once): each group capped at its own."""
    torch.manual_seed(0)
    reference = torch.rand(2, 3, 32, 32)
    capped = _loss(rm_ckpt, reference_margin=0.0)
    r_ref = capped.rewards(reference)['reward']
    assert r_ref[0] != r_ref[1]  # a ceiling from the other input would leave one group uncapped
    reward, terms = capped.image_rewards(reference.repeat_interleave(3, 0), reference=reference)
    assert terms['capped'].tolist() == [1.0] * 6
    assert torch.allclose(reward, r_ref.repeat_interleave(3), atol=1e-6)
    with pytest.raises(ValueError, match='5 images cannot be grouped over 2 references'):
        capped.image_rewards(torch.rand(5, 3, 32, 32), reference=reference)


@pytest.mark.parametrize('make', [FinPercepRewardLoss, lambda **kw: FinPercepGlobalIQALoss(metric='rm', **kw)],
                         ids=['finpercep', 'global'])
def test_a_reward_network_without_pretrain_path_needs_random_init(rm_ckpt, make):
    with pytest.raises(UserInputError, match=r'^pretrain_path is not set: the reward network FinPercepRewardNet would '
                                             r'score with random weights \(.*random_init: true'):
        make(network_opt=dict(TINY_RM))
    with pytest.raises(UserInputError, match='rm.pth and random_init: true contradict each other'):
        make(network_opt=dict(TINY_RM), pretrain_path=rm_ckpt, random_init=True)
    first, second = (make(network_opt=dict(TINY_RM), random_init=True, seed=4).net for _ in range(2))
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())  # seeded
    assert not any(p.requires_grad for p in first.parameters())
