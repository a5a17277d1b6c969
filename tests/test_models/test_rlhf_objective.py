"""ReFL raises the reward it is given: on a fixed batch, fidelity terms off, the frozen reward goes up.

A sign error anywhere in the reward term (the loss returning +R, the model subtracting it) makes
these tests fail: the generator would then lower the reward.
"""
import pytest
import torch
from tests.helpers.rlhf import (build_rlhf_model, make_generator_checkpoint, make_paired_folder, make_reward_checkpoint,
                          random_batch, tiny_network_g)

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.models.rl_algorithms import reward_per_sample
from finpercep_basicsr.utils.errors import UserInputError

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
        rewards, _ = reward_per_sample(model, sr, model.gt, current_iter)
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


def test_a_reference_ceiling_with_a_sampling_algorithm_is_refused(setup):
    tmp_path, data, rms, gen = setup
    with pytest.raises(UserInputError, match='reference_margin .* applies to rlhf.algorithm refl; dpo'):
        build_rlhf_model(tmp_path, data, rms[0], **_reward_only(gen, rlhf__algorithm='dpo',
                                                                train__reward_opt__reference_margin=0.1))
