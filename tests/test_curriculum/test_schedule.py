"""CCL schedule: hand-over iterations and weights, shared networks, option errors, state round trip."""
import pytest
import torch
from tests.helpers.rlhf import TINY_RM, make_reward_checkpoint

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.curriculum.coevolution import RewardCoEvolution
from finpercep_basicsr.curriculum.schedule import RewardCurriculum, parse_stages
from finpercep_basicsr.utils.options_io import deep_merge
from finpercep_basicsr.utils.errors import UserInputError

CPU = torch.device('cpu')


@pytest.fixture
def ckpts(tmp_path):
    return [make_reward_checkpoint(tmp_path / f'rm{i}.pth', seed=i) for i in range(3)]


def _train_opt(ckpts):
    """RM_0 global-only from 0; RM_1 from 10 with a 4-iteration ramp; RM_2 from 20, hard switch."""
    return {
        'reward_opt': {'type': 'FinPercepRewardLoss', 'network_opt': dict(TINY_RM), 'param_key': 'params',
                       'map_reduce': 'max', 'lambda_score': 1.0, 'lambda_map': 1.0},
        'ccl': {'stages': [
            {'start_iter': 0, 'reward': {'pretrain_path': ckpts[0], 'lambda_map': 0.0}},
            {'start_iter': 10, 'ramp_iters': 4, 'reward': {'pretrain_path': ckpts[1], 'lambda_score': 0.5}},
            {'start_iter': 20, 'reward': {'pretrain_path': ckpts[2], 'lambda_map': 2.0}},
        ]}}


def test_hand_over_iterations_and_blend_weights(ckpts):
    cur = RewardCurriculum(_train_opt(ckpts), CPU)
    assert cur.blend(1) == [(0, 1.0)] and cur.blend(9) == [(0, 1.0)]
    assert cur.blend(10) == [(0, 0.75), (1, 0.25)]  # a = (it - start + 1) / ramp
    assert cur.blend(11) == [(0, 0.5), (1, 0.5)]
    assert cur.blend(12) == [(0, 0.25), (1, 0.75)]
    assert cur.blend(13) == [(1, 1.0)]  # start + ramp - 1: first pure stage-1 iteration
    assert cur.blend(19) == [(1, 1.0)] and cur.blend(20) == [(2, 1.0)]  # ramp 0: hard switch
    w = cur.weights(11)
    assert w[0] == {'blend': 0.5, 'lambda_score': 1.0, 'lambda_map': 0.0}
    assert w[1] == {'blend': 0.5, 'lambda_score': 0.5, 'lambda_map': 1.0}
    assert cur.weights(25)[2] == {'blend': 1.0, 'lambda_score': 1.0, 'lambda_map': 2.0}
    assert cur.log_values(11) == {'ccl_stage': 1.0, 'ccl_blend': 0.5}


def test_step_returns_the_right_networks_with_the_right_weights(ckpts):
    cur = RewardCurriculum(_train_opt(ckpts), CPU)
    sr = torch.rand(2, 3, 32, 32)
    (m0, b0), = cur.step(5)
    assert b0 == 1.0 and (m0.lambda_score, m0.lambda_map) == (1.0, 0.0) and m0.pretrain_path == ckpts[0]
    active = cur.step(11)
    assert [(m.pretrain_path, b) for m, b in active] == [(ckpts[0], 0.5), (ckpts[1], 0.5)]
    m1 = active[1][0]
    assert (m1.lambda_score, m1.lambda_map) == (0.5, 1.0)
    expected = 0.5 * -m0.net(sr)['score'].mean() + 0.5 * -(0.5 * m1.net(sr)['score']
                                                            + (1 - m1.net(sr)['pdm'].flatten(1).amax(1))).mean()
    assert torch.allclose(sum(b * m(sr) for m, b in active), expected, atol=1e-6)
    (m2, _), = cur.step(20)
    assert m2.pretrain_path == ckpts[2] and m2.lambda_map == 2.0
    assert len(cur.modules) == 1  # reward nets of finished stages are freed


def test_stages_sharing_a_network_blend_their_lambdas(ckpts):
    opt = _train_opt(ckpts)
    opt['ccl']['stages'][1]['reward']['pretrain_path'] = ckpts[0]  # same RM, new weights
    cur = RewardCurriculum(opt, CPU)
    active = cur.step(11)
    assert len(active) == 1 and active[0][1] == 1.0
    module = active[0][0]
    assert (module.lambda_score, module.lambda_map) == (0.75, 0.5)  # 0.5*(1, 0) + 0.5*(0.5, 1)


def test_single_reward_without_ccl(ckpts):
    cur = RewardCurriculum({'reward_opt': {'type': 'FinPercepGlobalIQALoss', 'metric': 'rm',
                                           'network_opt': dict(TINY_RM), 'pretrain_path': ckpts[0]}}, CPU)
    assert cur.blend(1) == [(0, 1.0)] and cur.blend(10 ** 6) == [(0, 1.0)]
    (module, weight), = cur.step(3)
    assert type(module).__name__ == 'FinPercepGlobalIQALoss' and weight == 1.0


@pytest.mark.parametrize('stages, message', [
    ([], 'non-empty'),
    ([{'start_iter': 5}], 'must start at 0 or 1'),
    ([{'start_iter': 0}, {'start_iter': 0}], 'must come after'),
    ([{'start_iter': 0}, {'start_iter': 10, 'ramp_iters': 8}, {'start_iter': 15}], 'must come after'),
    ([{'ramp_iters': 2}], 'needs a start_iter'),
    ([{'start_iter': 0}, {'start_iter': 4, 'ramp_iters': -1}], 'ramp_iters must be >= 0'),
])
def test_bad_stage_lists_are_named(stages, message):
    opt = {'reward_opt': {'type': 'FinPercepRewardLoss'}, 'ccl': {'stages': stages}}
    with pytest.raises(UserInputError, match=message):
        parse_stages(opt)


def test_stage_options_deep_merge_over_reward_opt():
    merged = deep_merge({'network_opt': {'type': 'A', 'channels': [8]}, 'lambda_map': 1.0},
                       {'network_opt': {'stage': 2}, 'lambda_map': 0.0})
    assert merged == {'network_opt': {'type': 'A', 'channels': [8], 'stage': 2}, 'lambda_map': 0.0}


def test_coevolved_network_survives_a_state_round_trip(ckpts):
    opt = _train_opt(ckpts)
    cur = RewardCurriculum(opt, CPU)
    coevo = RewardCoEvolution({'every': 1, 'optim': {'type': 'Adam', 'lr': 1e-2}}, CPU)
    cur.step(3)
    before = {k: v.clone() for k, v in cur.active_module(3).net.state_dict().items()}
    torch.manual_seed(0)
    sr, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    logs = coevo.maybe_update(3, cur, sr, gt)
    assert set(logs) == {'l_rm_map', 'l_rm_rank'}
    after = cur.active_module(3).net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in cur.active_module(3).net.parameters())
    state, coevo_state = cur.state_dict(), coevo.state_dict()

    fresh = RewardCurriculum(opt, CPU)
    fresh_coevo = RewardCoEvolution({'every': 1, 'optim': {'type': 'Adam', 'lr': 1e-2}}, CPU)
    fresh.load_state_dict(state)  # the module is built lazily; the refreshed weights wait for it
    fresh_coevo.load_state_dict(coevo_state)
    fresh.step(4)
    for k, v in fresh.active_module(4).net.state_dict().items():
        assert torch.equal(v, after[k])
    # both continue identically (Adam moments restored too)
    coevo.maybe_update(4, cur, sr, gt)
    fresh_coevo.maybe_update(4, fresh, sr, gt)
    for k, v in fresh.active_module(4).net.state_dict().items():
        assert torch.equal(v, cur.active_module(4).net.state_dict()[k])


def test_coevolution_moves_the_map_towards_the_pixel_label(ckpts):
    cur = RewardCurriculum(_train_opt(ckpts), CPU)
    coevo = RewardCoEvolution({'every': 2, 'optim': {'type': 'Adam', 'lr': 5e-3}, 'rank_weight': 0.0}, CPU)
    torch.manual_seed(1)
    gt = torch.rand(2, 3, 32, 32)
    sr = gt.clone()
    sr[..., 8:24, 8:24] = torch.rand(2, 3, 16, 16)  # a damaged square
    cur.step(1)
    assert coevo.maybe_update(1, cur, sr, gt) == {}  # not due (every 2)
    first = [coevo.maybe_update(it, cur, sr, gt)['l_rm_map'].item() for it in range(2, 42, 2)]
    assert first[-1] < 0.7 * first[0]


def test_rewards_blend_per_image_and_report_a_ceiling_by_stage(ckpts):
    opt = _train_opt(ckpts)
    opt['ccl']['stages'][2]['reward']['reference_margin'] = 0.0
    cur = RewardCurriculum(opt, CPU)
    sr = torch.rand(3, 3, 32, 32)
    rewards, logs = cur.rewards(sr, 11)
    (m0, b0), (m1, b1) = cur.step(11)
    expected = b0 * m0.rewards(sr)['reward'] + b1 * m1.rewards(sr)['reward']
    assert rewards.shape == (3,) and torch.allclose(rewards, expected, atol=1e-6)
    assert set(logs) == {'reward', 'score', 'map_peak'} and torch.allclose(logs['reward'], expected.mean(), atol=1e-6)
    assert not cur.has_ceiling(11) and cur.has_ceiling(20) and cur.has_ceiling()
    capped, logs = cur.rewards(sr, 20, reference=sr)
    assert logs['capped'] == 1.0 and torch.allclose(capped, cur.rewards(sr, 20)[0], atol=1e-6)


@pytest.mark.parametrize('ccl, where', [(False, 'train.reward_opt'), (True, r'train.ccl.stages\[1\].reward')])
def test_a_stage_reward_without_pretrain_path_is_named(ckpts, ccl, where):
    opt = _train_opt(ckpts)
    if not ccl:
        del opt['ccl']  # the stages gave the paths: train.reward_opt alone has none
    reward = opt['ccl']['stages'][1]['reward'] if ccl else opt['reward_opt']
    reward.pop('pretrain_path', None)
    with pytest.raises(UserInputError, match=f'^{where}: pretrain_path is not set: the reward network'):
        RewardCurriculum(opt, CPU).step(11)
    reward['random_init'] = True  # random weights asked for
    assert RewardCurriculum(opt, CPU).step(11)
