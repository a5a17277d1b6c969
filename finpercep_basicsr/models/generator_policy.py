"""The generator interface the RLHF model trains: one-step BasicSR nets and multi-step diffusion SR.

``FinPercepRLHFModel`` talks to every generator through ``GeneratorPolicy`` so that a BasicSR
RRDBNet and a latent-diffusion SR model (OSEDiff, SeeSR, StableSR) take the same reward losses,
curriculum and option keys.
"""
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Trajectory:
    """A sampled trajectory of a stochastic sampler, for algorithms that need log-probabilities.

    Attributes:
        sr (Tensor): (B, 3, sH, sW) final output in [0, 1].
        states (list[Tensor]): Latents x_t visited, first to last.
        actions (list[Tensor]): The sampled next latents x_{t-1}.
        timesteps (list[int]): Timestep of each transition.
        log_probs (Tensor): (B, T) log-probability of each transition under the sampling policy.
        cond (dict): Conditioning needed to recompute log-probabilities (LQ, prompts, ...).
    """
    sr: torch.Tensor
    states: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    timesteps: list = field(default_factory=list)
    log_probs: torch.Tensor = None
    cond: dict = field(default_factory=dict)


class GeneratorPolicy(nn.Module):
    """Base class of RLHF policies.

    Subclasses set ``scale`` and implement ``sample``; stochastic multi-step samplers also implement
    ``sample_trajectory`` and ``log_prob`` (GRPO / DPO need them).
    """

    scale = 1
    stochastic = False

    def sample(self, lq, grad_steps=1):
        """Super-resolve ``lq`` (B, 3, H, W) in [0, 1] to (B, 3, sH, sW) in [0, 1].

        Gradients flow through the last ``grad_steps`` sampling steps only (ReFL's truncated
        backpropagation); a one-step generator ignores the argument.
        """
        raise NotImplementedError

    @torch.no_grad()
    def sample_no_grad(self, lq):
        """``sample`` without building a graph (evaluation, reference outputs, pair ranking)."""
        return self.sample(lq, grad_steps=0)

    def sample_trajectory(self, lq):
        """Sample with a stochastic sampler and return the ``Trajectory`` (no gradients)."""
        raise NotImplementedError(f'{type(self).__name__} has no stochastic sampler (needed by grpo/dpo)')

    def log_prob(self, trajectory):
        """(B, T) log-probabilities of ``trajectory``'s transitions under the current parameters."""
        raise NotImplementedError(f'{type(self).__name__} has no stochastic sampler (needed by grpo/dpo)')

    def trainable_parameters(self):
        """Parameters the optimiser updates (e.g. only LoRA adapters for diffusion models)."""
        return [p for p in self.parameters() if p.requires_grad]


class BasicSRNetPolicy(GeneratorPolicy):
    """Any BasicSR generator (RRDBNet, SwinIR, HAT, ...) as a deterministic one-step policy.

    Args:
        net (nn.Module): Maps (B, 3, H, W) in [0, 1] to (B, 3, sH, sW).
        scale (int): Upscaling factor of ``net``.
    """

    def __init__(self, net, scale):
        super().__init__()
        self.net = net
        self.scale = scale

    def sample(self, lq, grad_steps=1):
        if grad_steps == 0:
            with torch.no_grad():
                return self.net(lq).clamp(0, 1)
        return self.net(lq).clamp(0, 1)
