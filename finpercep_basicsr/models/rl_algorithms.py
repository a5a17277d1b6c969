"""The per-step objective of ``FinPercepRLHFModel``, chosen by ``rlhf.algorithm``: a registry of RL algorithms.

- ``refl`` (default, the paper's): the reward is backpropagated through the generator's last
  ``rlhf.grad_steps`` sampling steps; regularised by the model's fidelity terms (``pixel_opt``,
  ``ref_opt`` = distance to the frozen reference generator's output, ...).
- ``dpo``: DPO on the sampler's MDP (Diffusion-DPO / D3PO, as DP2O-SR applies it to SR): for each
  LQ two stochastic samples are ranked by the reward; with per-trajectory log-likelihood ratios
  d = log pi(tau) - log pi_ref(tau), loss = -log sigmoid(beta * (d_win - d_lose)). ``beta`` is the
  strength of the implicit KL to the reference; ties are dropped.
- ``grpo``: ``group_size`` stochastic samples per LQ, advantages = reward minus the group's mean,
  divided by the std of every reward of the step on every rank (``adv_std: global``, all-gathered
  under DDP, as Flow-GRPO's global std: small groups give noisy stds) or by the group's own std
  (``adv_std: group``); PPO-clipped importance ratios per sampling transition, plus ``kl_weight``
  times the k3 estimate of KL(pi || pi_ref) on the sampled transitions.

Every algorithm scores through the model's one reward path (``RLHFPolicyModel.reward``), so the CCL
blend, co-evolved reward networks and the ``reference_margin`` ceiling act alike for all of them:
dpo and grpo rank their samples by the capped reward (samples above the ceiling tie).

Under DDP each rank samples the groups of its own LQs; the log-probabilities with gradients go
through the DDP-wrapped policy so their gradients are all-reduced, and the KL to the reference is
computed per rank (each rank holds the same frozen reference).

Options (``rlhf``)::

    rlhf:
      algorithm: grpo        # refl | dpo | grpo (any registered name)
      grad_steps: 1          # refl: sampling steps with gradients
      group_size: 4          # grpo: samples per LQ (dpo always uses pairs)
      clip_range: 0.2        # grpo: PPO clipping of the ratio
      kl_weight: 0.01        # grpo: KL(pi || pi_ref) weight
      beta: 100.0            # dpo: inverse temperature (implicit KL strength)
      adv_eps: 1.0e-4        # grpo: std floor of the group normalisation
      adv_std: global        # grpo: global (every rank's rewards) | group (each group's own std)

The policy needs ``sample_trajectory`` / ``log_prob`` (a stochastic sampler) for dpo and grpo. Log
probabilities are per-element means over the latent (see ``latent_diffusion.gaussian_log_prob``).

Adding an algorithm: subclass ``RLAlgorithm``, register it under its ``rlhf.algorithm`` name (in a
module imported before the model is built) and use only the ``RLHFPolicyModel`` interface of the
model it gets::

    @register_rl_algorithm('my_algo')
    class MyAlgo(RLAlgorithm):
        def generator_loss(self, model, current_iter):
            sr = model.generate()
            rewards, logs = model.reward(sr, current_iter)
            return sr, -rewards.mean(), OrderedDict(l_total=-rewards.mean(), **logs)
"""
from collections import OrderedDict
from typing import Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F

from finpercep_basicsr.utils.errors import UserInputError

RL_ALGORITHMS = {}
"""``rlhf.algorithm`` name -> ``RLAlgorithm`` subclass, in registration order."""


class RLHFPolicyModel(Protocol):
    """What an RL algorithm may use of the model it trains (``FinPercepRLHFModel`` implements it).

    Every method acts on the batch the model was last fed (B LQ images, GT when the data has it).
    """

    def generate(self):
        """SR (B, 3, sH, sW) of the fed LQ with gradients through the last ``rlhf.grad_steps`` sampling steps."""

    def rollout(self, group_size):
        """``Trajectory`` of ``group_size`` stochastic samples of each fed LQ, without gradients.

        Rows (B * G): the G samples of an LQ are consecutive. Raises ``UserInputError`` for a policy
        without a stochastic sampler.
        """

    def log_prob(self, trajectory):
        """(B * G, T) log-probabilities of the trajectory's transitions under the trained policy, with
        gradients (through the DDP-wrapped policy, so that they are all-reduced)."""

    def reference_log_prob(self, trajectory):
        """(B * G, T) log-probabilities under the frozen reference generator, without gradients."""

    def reward(self, sr, current_iter, group_size=1, ceiling=True):
        """Per-image reward of ``sr`` (B * G, 3, sH, sW), G = ``group_size`` consecutive samples per fed LQ.

        The CCL rewards scheduled at ``current_iter`` (sum_k blend_k * loss_weight_k * R_k), each with its
        ``reference_margin`` ceiling unless ``ceiling`` is False; differentiable w.r.t. ``sr``.

        Returns:
            tuple[Tensor, dict]: Rewards (B * G,) and scalar log terms (``reward``, ``score``, ...).
        """

    def fidelity_loss(self, sr):
        """OrderedDict of the regularisers of ``sr`` (B, 3, sH, sW) against the fed batch (``l_pix``,
        ``l_ref``, ``l_percep``, ``l_style``, ``l_g_gan``): scalar tensors added to the loss as they are."""


class RLAlgorithm:
    """Base of the ``rlhf.algorithm`` objectives.

    Args:
        opt (dict): The ``rlhf`` options (the algorithm reads its own keys).

    Attributes:
        name (str): The name it is registered under (set by ``register_rl_algorithm``).
        needs_reference (bool): Whether it uses the frozen reference generator (the model then builds it).
        group_size (int): Samples per LQ it scores.
    """
    name = None
    needs_reference = False
    group_size = 1

    def __init__(self, opt):
        self.opt = opt

    def generator_loss(self, model, current_iter):
        """The step's loss on the model's fed batch.

        Args:
            model (RLHFPolicyModel): The model being trained.
            current_iter (int): Iteration (selects the CCL rewards).

        Returns:
            tuple: ``(sr, total, loss_dict)``: one output per LQ (B, 3, sH, sW) for the discriminator and
            co-evolution, the scalar loss to backpropagate, and the terms to log.
        """
        raise NotImplementedError


def register_rl_algorithm(name):
    """Class decorator: register an ``RLAlgorithm`` subclass as ``rlhf.algorithm: name``."""
    def register(cls):
        if name in RL_ALGORITHMS:
            raise ValueError(f'rlhf.algorithm {name!r} is already registered by {RL_ALGORITHMS[name].__name__}')
        cls.name = name
        RL_ALGORITHMS[name] = cls
        return cls
    return register


def gather_rows(x):
    """All-gather (B, ...) tensors of every rank into (world * B, ...), rank order; as is without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def group_advantages(rewards, eps=1e-4, std_scope='global', gather=gather_rows):
    """GRPO advantages of the local groups ``rewards`` (B, G), and the std they were divided by.

    ``(r - mean of its group) / (std + eps)``; std over the rewards of every group of every rank
    (``global``: ``gather`` collects them; a scalar) or of each group alone (``group``; (B, 1)).
    """
    centred = rewards - rewards.mean(1, keepdim=True)
    std = rewards.std(1, keepdim=True) if std_scope == 'group' else gather(rewards).std()
    return centred / (std + eps), std


@register_rl_algorithm('refl')
class ReFL(RLAlgorithm):
    """Reward feedback learning: minus the mean reward of a sample with gradients, plus the fidelity terms."""

    def generator_loss(self, model, current_iter):
        sr = model.generate()
        rewards, logs = model.reward(sr, current_iter)
        loss_dict = OrderedDict(l_reward=-rewards.mean())
        loss_dict.update(model.fidelity_loss(sr))
        total = 0
        for value in loss_dict.values():
            total = total + value
        loss_dict['l_total'] = total
        loss_dict.update(logs)
        return sr, total, loss_dict


class _PolicyGradient(RLAlgorithm):
    """Shared part of dpo/grpo: grouped rollouts and their rewards."""
    needs_reference = True
    group_size = 2

    def rollouts(self, model, current_iter):
        traj = model.rollout(self.group_size)
        with torch.no_grad():
            rewards, logs = model.reward(traj.sr, current_iter, self.group_size)
        return traj, rewards.detach().view(-1, self.group_size), logs


@register_rl_algorithm('dpo')
class DPO(_PolicyGradient):

    def __init__(self, opt):
        super().__init__(opt)
        self.beta = float(opt.get('beta', 100.0))
        if int(opt.get('group_size', 2)) < 2:
            raise UserInputError(f'rlhf.group_size {opt["group_size"]}: dpo ranks two samples of each LQ, one '
                                 f'sample per group has nothing to prefer (group_size 2 or leave it out)')

    def generator_loss(self, model, current_iter):
        traj, rewards, logs = self.rollouts(model, current_iter)
        d = (model.log_prob(traj).sum(1) - model.reference_log_prob(traj).sum(1)).view(-1, 2)
        win = rewards.argmax(1)
        idx = torch.arange(d.size(0), device=d.device)
        margin = d[idx, win] - d[idx, 1 - win]
        keep = (rewards[:, 0] != rewards[:, 1]).float()  # a tie (e.g. both at the ceiling) carries no preference
        l_dpo = -(F.logsigmoid(self.beta * margin) * keep).sum() / keep.sum().clamp(min=1)
        loss_dict = OrderedDict(l_dpo=l_dpo, l_total=l_dpo, **logs,
                                reward_gap=(rewards.max(1).values - rewards.min(1).values).mean(),
                                dpo_margin=margin.detach().mean())
        return traj.sr[::2], l_dpo, loss_dict


@register_rl_algorithm('grpo')
class GRPO(_PolicyGradient):

    def __init__(self, opt):
        super().__init__(opt)
        self.group_size = int(opt.get('group_size', 4))
        self.clip_range = float(opt.get('clip_range', 0.2))
        self.kl_weight = float(opt.get('kl_weight', 0.01))
        self.adv_eps = float(opt.get('adv_eps', 1e-4))
        self.adv_std = str(opt.get('adv_std', 'global'))
        if self.group_size < 2:
            raise UserInputError(f'rlhf.group_size must be >= 2 for grpo, got {self.group_size}')
        if self.adv_std not in ('global', 'group'):
            raise UserInputError(f'rlhf.adv_std must be global or group, got {self.adv_std!r}')

    def generator_loss(self, model, current_iter):
        traj, rewards, logs = self.rollouts(model, current_iter)
        adv, std = group_advantages(rewards, self.adv_eps, self.adv_std)
        adv = adv.flatten()
        new_lp = model.log_prob(traj)  # (B*G, T) with gradients
        ratio = torch.exp(new_lp - traj.log_probs)
        clipped = ratio.clamp(1 - self.clip_range, 1 + self.clip_range)
        l_pg = -torch.min(ratio * adv[:, None], clipped * adv[:, None]).mean()
        log_r = model.reference_log_prob(traj) - new_lp
        l_kl = (torch.exp(log_r) - log_r - 1).mean()
        total = l_pg + self.kl_weight * l_kl
        loss_dict = OrderedDict(l_pg=l_pg, l_kl=l_kl, l_total=total, **logs,
                                reward_group_std=rewards.std(1).mean(), ratio=ratio.detach().mean(),
                                adv_abs=adv.abs().mean(), adv_std=std.mean(), reward_sq=rewards.square().mean())
        return traj.sr[::self.group_size], total, loss_dict


def build_rl_algorithm(rlhf_opt):
    """The algorithm object of ``rlhf.algorithm`` (default ``refl``)."""
    opt = dict(rlhf_opt or {})
    name = str(opt.get('algorithm', 'refl')).lower()
    if name not in RL_ALGORITHMS:
        raise UserInputError(f'rlhf.algorithm must be one of {", ".join(RL_ALGORITHMS)}, got {name!r}')
    return RL_ALGORITHMS[name](opt)
