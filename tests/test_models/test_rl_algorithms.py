"""rlhf.algorithm objectives on a toy Gaussian policy: GRPO moves towards high reward, DPO prefers winners."""
from copy import deepcopy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from finpercep_basicsr.archs.latent_diffusion import gaussian_log_prob
from finpercep_basicsr.archs.generator_policy import GeneratorPolicy, Trajectory
from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
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


class Brightness(nn.Module):
    """Reward = mean brightness (a reward loss with return_terms, like FinPercepRewardLoss)."""
    loss_weight = 1.0

    def forward(self, sr, gt=None, return_terms=False):
        r = sr.flatten(1).mean(1)
        return -r.mean(), {'reward': r, 'score': r}


def _model(policy):
    return SimpleNamespace(net_g=policy, get_bare_model=lambda n: n, lq=torch.rand(4, 3, 2, 2), gt=None,
                           net_ref=deepcopy(policy).requires_grad_(False), opt={'dist': False},
                           curriculum=SimpleNamespace(step=lambda it: [(Brightness(), 1.0)]))


@pytest.mark.parametrize('algorithm', ['grpo', 'dpo'])
def test_policy_gradient_raises_the_reward(algorithm):
    torch.manual_seed(0)
    policy = ToyPolicy()
    model = _model(policy)
    algo = build_rl_algorithm({'algorithm': algorithm, 'group_size': 4, 'kl_weight': 0.0, 'beta': 1.0})
    optim = torch.optim.SGD(policy.parameters(), lr=0.05)
    for it in range(20):
        optim.zero_grad()
        sr, total, logs = algo.generator_loss(model, it)
        total.backward()
        optim.step()
    assert sr.shape == (4, 3, 4, 4)  # one sample per LQ goes back to the model
    assert policy.mu.item() > 0.45  # brighter = higher reward


def test_grpo_kl_pulls_back_to_the_reference_and_ratio_is_clipped():
    torch.manual_seed(0)
    policy = ToyPolicy()
    model = _model(policy)
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
    model = _model(ToyPolicy())
    model.net_g.stochastic = False
    with pytest.raises(UserInputError, match='stochastic'):
        build_rl_algorithm({'algorithm': 'dpo'}).generator_loss(model, 0)
    assert build_rl_algorithm(None).name == 'refl'
