"""The generator interface the RLHF model trains: one-step BasicSR nets and multi-step diffusion SR.

``FinPercepRLHFModel`` talks to every generator through ``GeneratorPolicy`` so that a BasicSR
RRDBNet and a latent-diffusion SR model (OSEDiff, SeeSR, StableSR) take the same reward losses,
curriculum and option keys.

How the RLHF model uses a policy:

- ``policy(lq, grad_steps)`` (``forward`` = ``sample``) produces the SR image; the model calls the
  policy through ``forward`` so that DistributedDataParallel's gradient hooks run.
- ``weights_module()`` is what ``net_g_<iter>.pth`` stores (``params`` / ``params_ema``) and what
  ``path.pretrain_network_g`` loads: the bare BasicSR network for ``BasicSRNetPolicy`` (so the
  checkpoint works in any BasicSR tool), e.g. only the adapters for a diffusion policy.
- ``make_reference()`` returns the frozen reference generator for the distance-to-reference
  regulariser, the ceiling and grpo/dpo (default: a frozen deep copy; a diffusion policy returns a
  ``SharedReference`` running its own modules with frozen copies of the trained tensors, so the
  frozen base is not copied). The model saves its ``weights_module()`` once per run
  (``net_g_ref.pth``) so that a resumed run keeps the original reference.
- A policy is a network type: a ``network_g.type`` whose registered arch subclasses
  ``GeneratorPolicy`` is used as is (``build_policy``); any other arch is wrapped in
  ``BasicSRNetPolicy``.
- ``restrict_trainable(patterns)`` (option ``rlhf.trainable``) keeps only the matching parameters
  of ``weights_module()`` trainable: partial fine-tuning, e.g. the tail of an RRDBNet.
"""
import difflib
import fnmatch
import re
from copy import deepcopy
from dataclasses import dataclass, field

import torch
from torch import nn

from finpercep_basicsr.utils.errors import UserInputError


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

    def infer(self, lq):
        """Test-time SR of ``lq`` (validation, testing): ``sample`` without a graph. Diffusion policies may follow
        their release's sampler instead (``network_g.inference``, ``archs.sr_inference``)."""
        return self.sample_no_grad(lq)

    def sample_trajectory(self, lq):
        """Sample with a stochastic sampler and return the ``Trajectory`` (no gradients)."""
        raise NotImplementedError(f'{type(self).__name__} has no stochastic sampler (needed by grpo/dpo)')

    def log_prob(self, trajectory):
        """(B, T) log-probabilities of ``trajectory``'s transitions under the current parameters."""
        raise NotImplementedError(f'{type(self).__name__} has no stochastic sampler (needed by grpo/dpo)')

    def trainable_parameters(self):
        """Parameters the optimiser updates (e.g. only LoRA adapters for diffusion models)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, lq, grad_steps=1):
        """Same as ``sample``: the entry DistributedDataParallel wraps."""
        return self.sample(lq, grad_steps=grad_steps)

    def weights_module(self):
        """The module saved as ``net_g`` and loaded from ``path.pretrain_network_g``."""
        return self

    def restrict_trainable(self, patterns, key='rlhf.trainable'):
        """Train only the parameters of ``weights_module()`` whose names match ``patterns``.

        Names are those of the saved checkpoint (``net_g_*.pth``), e.g. ``conv_last.weight`` or
        ``body.22.rdb3.conv5.bias`` for an RRDBNet. Every other parameter of the policy gets
        ``requires_grad=False``: the optimiser and DistributedDataParallel (built afterwards) never
        see it, and since the input does not require grad either, autograd records nothing before
        the first trainable layer, so backward stops there.

        Args:
            patterns (str | list[str] | None): Shell-style patterns matched against the whole name
                (``fnmatch``: ``conv_up*``, ``body.2[0-2].*``), or regular expressions prefixed
                with ``re:`` (``re:body\\.(21|22)\\..*``, matched against the whole name). None
                keeps every parameter as it is.
            key (str): Option key named in error messages.

        Returns:
            list[str]: Names of the trainable parameters (all of them when ``patterns`` is None).

        Raises:
            UserInputError: An empty list, a bad regular expression, or a pattern that matches no
                parameter (the message lists some parameter names).
        """
        named = list(self.weights_module().named_parameters())
        if patterns is None:
            return [n for n, p in named if p.requires_grad]
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        if not patterns:
            raise UserInputError(f'{key} is an empty list: nothing would be trained (drop the key to train all)')
        names = [n for n, _ in named]
        keep = set()
        for pattern in patterns:
            hits = {n for n in names if _name_matches(str(pattern), n, key)}
            if not hits:
                raise UserInputError(f'{key}: {pattern!r} matches no parameter of '
                                     f'{type(self.weights_module()).__name__}; {_describe_names(pattern, names)}')
            keep |= hits
        keep_ids = {id(p) for n, p in named if n in keep}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep_ids)
        return [n for n in names if n in keep]

    def frozen_copy(self):
        """A frozen eval-mode deep copy whose ``weights_module`` holds the tensors this policy trains (the EMA)."""
        copy = deepcopy(self).eval()
        for p in copy.parameters():
            p.requires_grad_(False)
        return copy

    def make_reference(self):
        """A frozen copy of the current policy (called once, after pretrained weights load)."""
        return self.frozen_copy()


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

    def weights_module(self):
        return self.net


def _name_matches(pattern, name, key):
    if pattern.startswith('re:'):
        try:
            return re.fullmatch(pattern[3:], name) is not None
        except re.error as err:
            raise UserInputError(f'{key}: {pattern!r} is not a valid regular expression: {err}') from err
    return fnmatch.fnmatchcase(name, pattern)


def _describe_names(pattern, names, shown=6):
    """A few parameter names (close ones first) for an error message."""
    close = difflib.get_close_matches(pattern.removeprefix('re:'), names, n=3, cutoff=0.4)
    sample = close + [n for n in names[:shown // 2] + names[-(shown // 2):] if n not in close]
    return f'its {len(names)} parameters include {", ".join(sample[:shown])}'


def build_policy(network_opt, default_scale=4):
    """Build the policy of ``network_g``.

    Args:
        network_opt (dict): ``network_g`` options; ``type`` is any arch in BasicSR's registry.
        default_scale (int): Scale when the options have neither ``scale`` nor ``upscale``.

    Returns:
        GeneratorPolicy: The arch itself if it is a policy, else a ``BasicSRNetPolicy`` around it.
    """
    from basicsr.archs import build_network

    net = build_network(deepcopy(network_opt))
    if isinstance(net, GeneratorPolicy):
        return net
    return BasicSRNetPolicy(net, int(network_opt.get('scale', network_opt.get('upscale', default_scale))))
