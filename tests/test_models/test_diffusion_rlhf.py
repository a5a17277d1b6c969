"""FinPercepRLHFModel with the diffusion generators: every algorithm, LoRA-only updates, resume, CCL."""
import os

import pytest
import torch
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder, tiny_diffusion_network
from tests.helpers.rlhf import (make_paired_folder, make_reward_checkpoint, model_from_option_file, random_batch,
                                write_rlhf_options)

import finpercep_basicsr  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('diffusion_rlhf')
    sd = make_sd_folder(str(root / 'sd'))
    return {'root': root, 'sd': sd, 'seesr': make_seesr_folder(str(root / 'seesr')),
            'data': make_paired_folder(root / 'data'),
            'rm': [make_reward_checkpoint(root / f'rm{i}.pth', seed=i) for i in range(2)]}


def _model(assets, tmp_path, kind, algorithm, **overrides):
    rlhf = {'algorithm': algorithm, 'grad_steps': 1, 'group_size': 2, 'kl_weight': 0.1, 'beta': 10.0}
    network = tiny_diffusion_network(kind, assets['sd'], assets['seesr'])
    path = write_rlhf_options(tmp_path / 'opt.yml', assets['data'], assets['rm'][0], network_g=network, rlhf=rlhf,
                              train__ema_decay=0, **overrides)
    return model_from_option_file(path, tmp_path)


@pytest.mark.parametrize('kind', ['osediff', 'seesr'])
def test_rlhf_iterations_update_only_the_adapters(assets, tmp_path, kind):
    """One model per generator (building is the slow part); each algorithm runs an iteration on it."""
    from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
    torch.manual_seed(0)
    model = _model(assets, tmp_path, kind, 'refl')
    policy = model.net_g
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    assert frozen and all('lora_' in n or 'conv_in' in n for n, p in policy.named_parameters() if p.requires_grad)
    assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())
    model.feed_data(random_batch(batch=1))
    for it, algorithm in enumerate(('refl', 'grpo', 'dpo'), 1):
        model.rl_algorithm = build_rl_algorithm({'algorithm': algorithm, 'group_size': 2, 'kl_weight': 0.1,
                                                 'beta': 10.0})
        before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
        model.optimize_parameters(it)
        assert model.nonfinite_skips == 0
        expected = {'refl': 'l_reward', 'grpo': 'l_pg', 'dpo': 'l_dpo'}[algorithm]
        assert expected in model.log_dict and torch.isfinite(torch.tensor(model.log_dict['l_total']))
        params = dict(policy.named_parameters())
        assert any(not torch.equal(v, params[n]) for n, v in before.items()), algorithm
    params = dict(policy.named_parameters())
    assert all(torch.equal(v, params[n]) for n, v in frozen.items())
    model.test()
    assert model.output.shape == (1, 3, 32, 32)


def test_grpo_needs_a_stochastic_policy(assets, tmp_path):
    from finpercep_basicsr.utils.errors import UserInputError
    model = _model(assets, tmp_path, 'osediff', 'grpo', network_g__explore_sigma=0.0)
    model.feed_data(random_batch(batch=1))
    with pytest.raises(UserInputError, match='stochastic'):
        model.optimize_parameters(1)


def test_save_resume_and_ccl_stage_change(assets, tmp_path):
    ccl = {'stages': [{'start_iter': 0, 'reward': {'pretrain_path': assets['rm'][0], 'lambda_map': 0.0}},
                      {'start_iter': 2, 'reward': {'pretrain_path': assets['rm'][1]}}]}
    torch.manual_seed(0)
    model = _model(assets, tmp_path, 'osediff', 'refl', train__ccl=ccl)
    model.feed_data(random_batch(batch=1))
    stages = []
    for it in (1, 2, 3):
        model.optimize_parameters(it)
        stages.append(model.log_dict['ccl_stage'])
    assert stages == [0.0, 1.0, 1.0]
    model.save(0, 3)
    saved = torch.load(tmp_path / 'models' / 'net_g_3.pth', weights_only=True)['params']
    assert saved and all('lora_' in k or 'conv_in' in k for k in saved)  # adapters only, not the SD base
    assert os.path.isfile(tmp_path / 'models' / 'net_g_ref.pth')

    resumed = _model(assets, tmp_path / 'resumed', 'osediff', 'refl', train__ccl=ccl,
                     path__pretrain_network_g=str(tmp_path / 'models' / 'net_g_3.pth'))
    now = resumed.net_g.weights_module().state_dict()
    assert all(torch.equal(saved[k], now[k]) for k in saved)
    lq = random_batch(batch=1)['lq']
    assert torch.allclose(resumed.net_g.sample_no_grad(lq), model.net_g.sample_no_grad(lq), atol=1e-6)
