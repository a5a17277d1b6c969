"""The per-step objective of ``FinPercepRLHFModel``, chosen by ``rlhf.algorithm``.

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

Under DDP each rank samples the groups of its own LQs; the log-probabilities with gradients go
through the DDP-wrapped policy (``net_g(trajectory=...)``) so their gradients are all-reduced, and
the KL to the reference is computed per rank (each rank holds the same frozen reference).

Options (``rlhf``)::

    rlhf:
      algorithm: grpo        # refl | dpo | grpo
      grad_steps: 1          # refl: sampling steps with gradients
      group_size: 4          # grpo: samples per LQ (dpo always uses pairs)
      clip_range: 0.2        # grpo: PPO clipping of the ratio
      kl_weight: 0.01        # grpo: KL(pi || pi_ref) weight
      beta: 100.0            # dpo: inverse temperature (implicit KL strength)
      adv_eps: 1.0e-4        # grpo: std floor of the group normalisation
      adv_std: global        # grpo: global (every rank's rewards) | group (each group's own std)

The policy needs ``sample_trajectory`` / ``log_prob`` (a stochastic sampler) for dpo and grpo. Log
probabilities are per-element means over the latent (see ``latent_diffusion.gaussian_log_prob``).
"""
from collections import OrderedDict

import inspect

import torch
import torch.distributed as dist
import torch.nn.functional as F

from finpercep_basicsr.utils.errors import UserInputError

ALGORITHMS = ('refl', 'dpo', 'grpo')


def reward_per_sample(model, sr, gt, current_iter):
    """Per-image reward (B,) of the scheduled (blended) reward losses, and mean terms for logging.

    Equals minus the reward loss per image: sum_k blend_k * loss_weight_k * R_k.
    """
    total, logs = 0, {}
    for module, weight in model.curriculum.step(current_iter):
        _, terms = module(sr, gt, return_terms=True)
        total = total + weight * getattr(module, 'loss_weight', 1.0) * terms['reward']
        for name in ('score', 'map_peak'):
            if name in terms:
                logs[name] = logs.get(name, 0) + weight * terms[name].mean()
    return total, logs


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


def policy_log_prob(model, policy, trajectory):
    """(B, T) log-probabilities with gradients, through DDP's forward when the policy is wrapped."""
    if model.net_g is policy:
        return policy.log_prob(trajectory)
    if 'trajectory' not in inspect.signature(policy.forward).parameters:
        raise UserInputError(f'{type(policy).__name__} cannot run grpo/dpo under DDP: its forward has no '
                             f'trajectory argument (the diffusion policies have one)')
    return model.net_g(trajectory=trajectory)


class ReFL:
    """Reward feedback learning: the model's generator loss on a sample with gradients."""
    name = 'refl'
    needs_reference = False

    def __init__(self, opt):
        self.opt = opt

    def generator_loss(self, model, current_iter):
        """Returns ``(sr, total_loss, loss_dict)``; ``sr`` (B, 3, sH, sW) keeps its graph."""
        sr = model.net_g(model.lq, grad_steps=model.grad_steps)
        total, loss_dict = model._generator_loss(sr, current_iter)
        return sr, total, loss_dict


class _PolicyGradient:
    """Shared parts of dpo/grpo: checks, grouped rollouts and their rewards."""
    needs_reference = True
    group_size = 2

    def __init__(self, opt):
        self.opt = opt

    def rollouts(self, model, current_iter):
        policy = model.get_bare_model(model.net_g)
        if not getattr(policy, 'stochastic', False):
            raise UserInputError(f'rlhf.algorithm {self.name} needs a stochastic policy: {type(policy).__name__} '
                                 f'has none (diffusion generators: rollout_eta > 0 or explore_sigma > 0)')
        g = self.group_size
        lq = model.lq.repeat_interleave(g, 0)
        gt = model.gt.repeat_interleave(g, 0) if model.gt is not None else None
        traj = policy.sample_trajectory(lq)
        with torch.no_grad():
            rewards, logs = reward_per_sample(model, traj.sr, gt, current_iter)
        return policy, traj, rewards.detach().view(-1, g), logs


class GRPO(_PolicyGradient):
    name = 'grpo'

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
        policy, traj, rewards, logs = self.rollouts(model, current_iter)
        adv, std = group_advantages(rewards, self.adv_eps, self.adv_std)
        adv = adv.flatten()
        new_lp = policy_log_prob(model, policy, traj)  # (B*G, T) with gradients
        ratio = torch.exp(new_lp - traj.log_probs)
        clipped = ratio.clamp(1 - self.clip_range, 1 + self.clip_range)
        l_pg = -torch.min(ratio * adv[:, None], clipped * adv[:, None]).mean()
        with torch.no_grad():
            ref_lp = model.net_ref.log_prob(traj)
        log_r = ref_lp - new_lp
        l_kl = (torch.exp(log_r) - log_r - 1).mean()
        total = l_pg + self.kl_weight * l_kl
        loss_dict = OrderedDict(l_pg=l_pg, l_kl=l_kl, l_total=total, reward=rewards.mean(),
                                reward_group_std=rewards.std(1).mean(), ratio=ratio.detach().mean(),
                                adv_abs=adv.abs().mean(), adv_std=std.mean(), reward_sq=rewards.square().mean(),
                                **logs)
        return traj.sr[::self.group_size], total, loss_dict


class DPO(_PolicyGradient):
    name = 'dpo'

    def __init__(self, opt):
        super().__init__(opt)
        self.beta = float(opt.get('beta', 100.0))
        if int(opt.get('group_size', 2)) < 2:
            raise UserInputError(f'rlhf.group_size {opt["group_size"]}: dpo ranks two samples of each LQ, one '
                                 f'sample per group has nothing to prefer (group_size 2 or leave it out)')

    def generator_loss(self, model, current_iter):
        policy, traj, rewards, logs = self.rollouts(model, current_iter)
        with torch.no_grad():
            ref_lp = model.net_ref.log_prob(traj).sum(1)
        d = (policy_log_prob(model, policy, traj).sum(1) - ref_lp).view(-1, 2)
        win = rewards.argmax(1)
        idx = torch.arange(d.size(0), device=d.device)
        margin = d[idx, win] - d[idx, 1 - win]
        keep = (rewards[:, 0] != rewards[:, 1]).float()  # a tie carries no preference
        l_dpo = -(F.logsigmoid(self.beta * margin) * keep).sum() / keep.sum().clamp(min=1)
        loss_dict = OrderedDict(l_dpo=l_dpo, l_total=l_dpo, reward=rewards.mean(),
                                reward_gap=(rewards.max(1).values - rewards.min(1).values).mean(),
                                dpo_margin=margin.detach().mean(), **logs)
        return traj.sr[::2], l_dpo, loss_dict


def build_rl_algorithm(rlhf_opt):
    """The algorithm object of ``rlhf.algorithm`` (default ``refl``)."""
    opt = dict(rlhf_opt or {})
    name = str(opt.get('algorithm', 'refl')).lower()
    classes = {'refl': ReFL, 'dpo': DPO, 'grpo': GRPO}
    if name not in classes:
        raise UserInputError(f'rlhf.algorithm must be one of {", ".join(ALGORITHMS)}, got {name!r}')
    return classes[name](opt)
