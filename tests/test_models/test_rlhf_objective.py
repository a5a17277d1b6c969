"""ReFL raises the reward it is given: on a fixed batch, fidelity terms off, the frozen reward goes up.
The reference ceiling (``reference_margin``) holds for refl, dpo and grpo alike.

A sign error anywhere in the reward term (the loss returning +R, the model subtracting it) makes
these tests fail: the generator would then lower the reward.
"""
import pytest
import torch
from tests.helpers.rlhf import (build_rlhf_model, make_generator_checkpoint, make_paired_folder, make_reward_checkpoint,
                                random_batch, tiny_gaussian_network_g, tiny_network_g)

import finpercep_basicsr  # noqa: F401

STEPS = 6


@pytest.fixture
def setup(tmp_path, one_thread):
    data = make_paired_folder(tmp_path / 'data')
    # responsive frozen rewards (a default-initialised tiny RM is nearly constant in the image)
    rms = [make_reward_checkpoint(tmp_path / f'rm{i}.pth', seed=i, responsive=True) for i in range(2)]
    gen = make_generator_checkpoint(tmp_path / 'g.pth', tiny_network_g())
    return tmp_path, data, rms, gen


def _reward_only(gen, **overrides):
    """Options with every fidelity term and the EMA off: the reward is the whole objective."""
    return dict(path__pretrain_network_g=gen, train__pixel_opt=None, train__ref_opt=None, train__ema_decay=0,
                **overrides)


def _measured_reward(model, current_iter):
    """Mean reward of the current generator on the fed batch, as scheduled at ``current_iter``."""
    with torch.no_grad():
        sr = model.net_g(model.lq, grad_steps=0)
        rewards, _ = model.reward(sr, current_iter, ceiling=False)
    return rewards.mean().item()


def _train_on_fixed_batch(model, current_iter):
    model.feed_data(random_batch(seed=3))
    before = _measured_reward(model, current_iter)
    for _ in range(STEPS):
        model.optimize_parameters(current_iter)
    return before, _measured_reward(model, current_iter)


def test_refl_steps_raise_the_frozen_reward(setup):
    tmp_path, data, rms, gen = setup
    model = build_rlhf_model(tmp_path, data, rms[0], **_reward_only(gen))
    before, after = _train_on_fixed_batch(model, 1)
    assert not any(k in model.log_dict for k in ('l_pix', 'l_ref', 'l_percep'))
    assert after > before + 1e-3, (before, after)
    assert model.nonfinite_skips == 0


def test_a_blended_ccl_step_raises_the_blended_reward(setup):
    tmp_path, data, rms, gen = setup
    # RM_0 (score only) from 0, RM_1 (score + map) ramped in from iteration 1 over 4 iterations:
    # iteration 2 is half RM_0, half RM_1, each with its own network
    ccl = {'stages': [{'start_iter': 0, 'reward': {'pretrain_path': rms[0], 'lambda_map': 0.0}},
                      {'start_iter': 1, 'ramp_iters': 4, 'reward': {'pretrain_path': rms[1]}}]}
    model = build_rlhf_model(tmp_path, data, rms[0], **_reward_only(gen, train__ccl=ccl))
    active = model.curriculum.step(2)
    assert [round(w, 4) for _, w in active] == [0.5, 0.5] and active[0][0] is not active[1][0]
    before, after = _train_on_fixed_batch(model, 2)
    assert model.log_dict['ccl_stage'] == 1.0 and model.log_dict['ccl_blend'] == 0.5
    assert after > before + 1e-3, (before, after)


def test_a_reference_ceiling_of_zero_margin_holds_the_reward_at_the_start(setup):
    """reference_margin 0: the generator starts at its reference, so the reward cannot pay it to move;
    a margin it never reaches trains exactly as no ceiling does."""
    tmp_path, data, rms, gen = setup
    held = build_rlhf_model(tmp_path, data, rms[0], **_reward_only(gen, train__reward_opt__reference_margin=0.0))
    assert held.net_ref is not None  # the ceiling needs the reference even with ref_opt off
    before, after = _train_on_fixed_batch(held, 1)
    assert held.log_dict['capped'] == 1.0
    assert abs(after - before) < 1e-6, (before, after)
    runs = {}
    for margin in (None, 100.0):
        overrides = _reward_only(gen, train__reward_opt__reference_margin=margin)
        model = build_rlhf_model(tmp_path, data, rms[0], **overrides)
        runs[margin] = _train_on_fixed_batch(model, 1)
    assert runs[100.0][1] > runs[100.0][0] + 1e-3
    assert runs[100.0] == pytest.approx(runs[None], abs=1e-6)


def _sampling(gen, algorithm, margin):
    """A stochastic policy (the tiny RRDBNet plus Gaussian noise) trained by ``algorithm``, reward only."""
    rlhf = {'algorithm': algorithm, 'group_size': 2, 'kl_weight': 0.1, 'beta': 10.0}
    return _reward_only(gen, network_g=tiny_gaussian_network_g(), rlhf=rlhf,
                        train__reward_opt__reference_margin=margin)


def _weights(model):
    return {k: v.clone() for k, v in model.net_g.weights_module().state_dict().items()}


def test_grouped_samples_are_capped_by_the_reference_of_their_own_lq(setup):
    """Two LQs with different reference rewards, each sample exactly its LQ's reference output: a margin just below 0
    caps every one; a ceiling taken from the other LQ would leave one of the two groups uncapped. (Margin 0 would
    compare rewards computed in batches of different sizes, which agree only to float noise.)"""
    tmp_path, data, rms, gen = setup
    margin = -1e-5  # far above the float noise between batch sizes, far below the two LQs' difference
    model = build_rlhf_model(tmp_path, data, rms[0], **_sampling(gen, 'grpo', margin))
    model.feed_data(random_batch(seed=3))
    reference = model.net_g(model.lq, grad_steps=0)  # the policy starts at its reference
    r_ref, _ = model.reward(reference, 1, ceiling=False)
    assert abs(r_ref[0] - r_ref[1]) > 1e-4
    samples = reference.repeat_interleave(2, 0)
    rewards, logs = model.reward(samples, 1, group_size=2)
    assert logs['capped'] == 1.0
    assert torch.allclose(rewards, r_ref.repeat_interleave(2) + margin, atol=1e-6)
    uncapped, logs = model.reward(samples, 1, group_size=2, ceiling=False)
    assert 'capped' not in logs and torch.allclose(uncapped, r_ref.repeat_interleave(2), atol=1e-6)


@pytest.mark.parametrize('algorithm', ['dpo', 'grpo'])
def test_a_ceiling_below_every_sample_leaves_dpo_and_grpo_nothing_to_prefer(setup, algorithm):
    """Every sample capped: all rewards of a group tie, so neither algorithm moves the policy."""
    tmp_path, data, rms, gen = setup
    model = build_rlhf_model(tmp_path, data, rms[0], **_sampling(gen, algorithm, -100.0))
    assert model.net_ref is not None
    start = _weights(model)
    before, after = _train_on_fixed_batch(model, 1)
    assert model.log_dict['capped'] == 1.0 and model.nonfinite_skips == 0
    assert all(torch.equal(v, start[k]) for k, v in _weights(model).items())
    assert after == before


@pytest.mark.parametrize('algorithm', ['dpo', 'grpo'])
def test_a_ceiling_no_sample_reaches_trains_dpo_and_grpo_as_no_ceiling(setup, algorithm):
    tmp_path, data, rms, gen = setup
    runs = {}
    for margin in (None, 100.0):
        model = build_rlhf_model(tmp_path, data, rms[0], **_sampling(gen, algorithm, margin))
        start = _weights(model)
        runs[margin] = _train_on_fixed_batch(model, 1), _weights(model)
        assert model.log_dict.get('capped', 0.0) == 0.0
    assert any(not torch.equal(v, start[k]) for k, v in runs[None][1].items())  # the samples were ranked
    assert runs[100.0][0] == pytest.approx(runs[None][0], abs=1e-6)
    assert all(torch.allclose(v, runs[None][1][k], atol=1e-7) for k, v in runs[100.0][1].items())
