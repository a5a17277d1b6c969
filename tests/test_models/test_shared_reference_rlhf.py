"""FinPercepRLHFModel with a diffusion policy's shared reference: ReFL (ref_opt), grpo, save and resume."""
import pytest
import torch
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder, tiny_diffusion_network
from tests.helpers.rlhf import (make_paired_folder, make_reward_checkpoint, model_from_option_file, random_batch,
                                write_rlhf_options)

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.archs.shared_reference import SharedReference
from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('shared_reference_rlhf')
    return {'sd': make_sd_folder(str(root / 'sd')),
            'seesr': make_seesr_folder(str(root / 'seesr'), image_attention=False),
            'data': make_paired_folder(root / 'data'), 'rm': make_reward_checkpoint(root / 'rm.pth')}


def _model(assets, tmp_path, kind, **overrides):
    network = tiny_diffusion_network(kind, assets['sd'], assets['seesr'])
    path = write_rlhf_options(tmp_path / 'opt.yml', assets['data'], assets['rm'], network_g=network,
                              rlhf={'algorithm': 'refl', 'grad_steps': 1, 'group_size': 2}, **overrides)
    return model_from_option_file(path, tmp_path)


def _seeded(net, lq):
    """``net(lq)`` without a graph from a fixed RNG state (SeeSR draws its start noise)."""
    torch.manual_seed(5)
    return net(lq, grad_steps=0)


@pytest.mark.parametrize('kind', ['osediff', 'seesr'])
def test_refl_and_grpo_steps_with_the_shared_reference(assets, tmp_path, kind):
    torch.manual_seed(0)
    model = _model(assets, tmp_path, kind)  # the tiny template has ref_opt and an EMA
    policy = model.net_g
    assert isinstance(model.net_ref, SharedReference) and model.net_ref.policy is policy
    assert model.net_g_ema is not policy and model.net_g_ema.unet is not policy.unet  # the EMA keeps its copy
    model.feed_data(random_batch(batch=1))
    start = _seeded(model.net_ref, model.lq)
    for it in (1, 2):
        model.optimize_parameters(it)
    assert model.log_dict['l_ref'] > 0
    model.rl_algorithm = build_rl_algorithm({'algorithm': 'grpo', 'group_size': 2, 'kl_weight': 0.1})
    model.optimize_parameters(3)  # its KL term runs the reference's log_prob
    assert model.nonfinite_skips == 0 and 'l_pg' in model.log_dict and policy.training
    assert (_seeded(policy, model.lq) - start).abs().max() > 1e-4
    assert torch.equal(_seeded(model.net_ref, model.lq), start)


def test_save_and_resume_keep_the_start_reference(assets, tmp_path):
    torch.manual_seed(0)
    model = _model(assets, tmp_path, 'osediff', train__ema_decay=0)
    model.feed_data(random_batch(batch=1))
    start = model.net_ref(model.lq, grad_steps=0)
    for it in (1, 2):
        model.optimize_parameters(it)
    model.save(0, 2)
    ref_file = torch.load(tmp_path / 'models' / 'net_g_ref.pth', weights_only=True)['params']
    assert list(ref_file) == model.net_g.trainable_names()
    resumed = _model(assets, tmp_path, 'osediff', train__ema_decay=0,
                     path__pretrain_network_g=str(tmp_path / 'models' / 'net_g_2.pth'),
                     path__resume_state=str(tmp_path / 'states' / '2.state'))
    resumed.feed_data(random_batch(batch=1))
    assert torch.allclose(resumed.net_g.sample_no_grad(resumed.lq), model.net_g.sample_no_grad(model.lq), atol=1e-6)
    assert torch.allclose(resumed.net_ref(resumed.lq, grad_steps=0), start, atol=1e-6)


@pytest.mark.parametrize('kind', ['osediff', 'seesr'])
def test_the_ema_of_a_diffusion_policy_averages_its_trained_tensors(assets, tmp_path, kind):
    torch.manual_seed(0)
    model = _model(assets, tmp_path, kind)  # the tiny template's ema_decay 0.9
    ema, trained = model.net_g_ema.weights_module(), model.net_g.weights_module()
    assert list(ema.state_dict()) == list(trained.state_dict()) and len(ema.state_dict()) > 0
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    model.feed_data(random_batch(batch=1))
    model.optimize_parameters(1)
    moved = [k for k, v in ema.state_dict().items() if not torch.equal(v, start[k])]
    assert moved and set(moved) <= set(trained.state_dict())
    assert model.net_g_ema.unet is not model.net_g.unet
    assert not any(p.requires_grad for p in model.net_g_ema.parameters())
