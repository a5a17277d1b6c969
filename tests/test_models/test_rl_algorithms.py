"""rlhf.algorithm objectives through the RLHFPolicyModel interface: a toy Gaussian policy moves to high reward."""
from collections import OrderedDict
from copy import deepcopy

import pytest
import torch
from tests.helpers.rlhf import build_rlhf_model, make_paired_folder, make_reward_checkpoint, random_batch
from torch import nn

from finpercep_basicsr.archs.generator_policy import GeneratorPolicy, Trajectory
from finpercep_basicsr.archs.latent_diffusion import gaussian_log_prob
from finpercep_basicsr.models import rl_algorithms
from finpercep_basicsr.models.rl_algorithms import RLAlgorithm, build_rl_algorithm, register_rl_algorithm
from finpercep_basicsr.utils.errors import UserInputError


class ToyPolicy(GeneratorPolicy):
    """SR = constant grey level mu + sigma * noise: a one-transition stochastic policy."""
    stochastic = True

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(0.3))

    def sample(self, lq, grad_steps=1):
        return self.mu.expand(lq.size(0), 3, 4, 4)

    @torch.no_grad()
    def sample_trajectory(self, lq):
        mean = self.mu.expand(lq.size(0), 1, 1, 1)
        act = mean + 0.1 * torch.randn_like(mean)
        return Trajectory(sr=act.expand(-1, 3, 4, 4), states=[mean], actions=[act], timesteps=[0],
                          log_probs=gaussian_log_prob(act, mean, 0.1)[:, None], cond={'lq': lq})

    def log_prob(self, traj):
        return gaussian_log_prob(traj.actions[0], self.mu.expand_as(traj.actions[0]), 0.1)[:, None]


class ToyModel:
    """The ``RLHFPolicyModel`` interface around ``ToyPolicy``; reward = mean brightness of each image."""

    def __init__(self, policy, batch=4):
        self.policy, self.ref = policy, deepcopy(policy).requires_grad_(False)
        self.lq = torch.rand(batch, 3, 2, 2)

    def generate(self):
        return self.policy(self.lq)

    def rollout(self, group_size):
        return self.policy.sample_trajectory(self.lq.repeat_interleave(group_size, 0))

    def log_prob(self, trajectory):
        return self.policy.log_prob(trajectory)

    @torch.no_grad()
    def reference_log_prob(self, trajectory):
        return self.ref.log_prob(trajectory)

    def reward(self, sr, current_iter, group_size=1, ceiling=True):
        r = sr.flatten(1).mean(1)
        return r, {'reward': r.mean()}

    def fidelity_loss(self, sr):
        return OrderedDict()


@pytest.mark.parametrize('algorithm', ['refl', 'grpo', 'dpo'])
def test_every_algorithm_raises_the_reward(algorithm):
    torch.manual_seed(0)
    policy = ToyPolicy()
    model = ToyModel(policy)
    algo = build_rl_algorithm({'algorithm': algorithm, 'group_size': 4, 'kl_weight': 0.0, 'beta': 1.0})
    optim = torch.optim.SGD(policy.parameters(), lr=0.05)
    for it in range(20):
        optim.zero_grad()
        sr, total, logs = algo.generator_loss(model, it)
        total.backward()
        optim.step()
    assert sr.shape == (4, 3, 4, 4)  # one sample per LQ goes back to the model
    assert policy.mu.item() > 0.45  # brighter = higher reward
    assert 'reward' in logs and logs['l_total'] is total


def test_grpo_kl_pulls_back_to_the_reference_and_ratio_is_clipped():
    torch.manual_seed(0)
    policy = ToyPolicy()
    model = ToyModel(policy)
    with torch.no_grad():
        policy.mu.add_(0.2)  # the policy drifted from the reference
    algo = build_rl_algorithm({'algorithm': 'grpo', 'group_size': 2, 'kl_weight': 1.0})
    _, total, logs = algo.generator_loss(model, 0)
    assert logs['l_kl'] > 0
    policy.mu.grad = None
    logs['l_kl'].backward()
    assert policy.mu.grad > 0  # descending the KL lowers mu back to the reference 0.3


def test_options_are_checked():
    with pytest.raises(UserInputError, match='refl, dpo, grpo'):
        build_rl_algorithm({'algorithm': 'ppo'})
    with pytest.raises(UserInputError, match='group_size'):
        build_rl_algorithm({'algorithm': 'grpo', 'group_size': 1})
    assert build_rl_algorithm(None).name == 'refl'


def test_an_algorithm_registered_by_name_is_built_from_the_options(monkeypatch):
    monkeypatch.setattr(rl_algorithms, 'RL_ALGORITHMS', dict(rl_algorithms.RL_ALGORITHMS))

    @register_rl_algorithm('mean_reward')
    class MeanReward(RLAlgorithm):
        def generator_loss(self, model, current_iter):
            sr = model.generate()
            rewards, logs = model.reward(sr, current_iter)
            return sr, -rewards.mean(), OrderedDict(l_total=-rewards.mean(), **logs)

    algo = build_rl_algorithm({'algorithm': 'mean_reward'})
    assert isinstance(algo, MeanReward) and algo.name == 'mean_reward' and not algo.needs_reference
    _, total, _ = algo.generator_loss(ToyModel(ToyPolicy()), 0)
    assert total.item() == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="'grpo' is already registered by GRPO"):
        register_rl_algorithm('grpo')(MeanReward)


def test_a_sampling_algorithm_needs_a_stochastic_policy(tmp_path, one_thread):
    """The tiny RRDBNet is a deterministic policy: dpo has nothing to sample."""
    data = make_paired_folder(tmp_path / 'data')
    model = build_rlhf_model(tmp_path, data, make_reward_checkpoint(tmp_path / 'rm.pth'), rlhf={'algorithm': 'dpo'})
    model.feed_data(random_batch())
    with pytest.raises(UserInputError, match='rlhf.algorithm dpo needs a stochastic policy: BasicSRNetPolicy'):
        model.optimize_parameters(1)
