"""The frozen reference of a diffusion policy without a second copy of its frozen base.

``SharedReference`` is the policy as it was when the reference was made: it runs the policy's own
modules with the tensors that training changes (LoRA adapters, OSEDiff's ``conv_in``, StableSR's
encoder/SPADE/CFW, a ControlNet trained in full: whatever ``trainable_names()`` lists) and the
buffers replaced by frozen copies taken then (``torch.func.functional_call``). The multi-GB frozen
base is shared: only the trained tensors are copied, which is also what ``net_g_ref.pth`` stores.

Why copies of the trained tensors rather than peft's ``disable_adapters()``: "adapters off" is the
start policy only for fresh adapters (B = 0) and a frozen rest. A run started from tuned adapters
(``path.pretrain_network_g``, a released OSEDiff pkl) or one that trains full tensors next to the
adapters (OSEDiff's ``conv_in``) would get another reference than the deep copy gave.
"""
from collections import OrderedDict

import torch
from torch.func import functional_call

from finpercep_basicsr.archs.generator_policy import GeneratorPolicy
from finpercep_basicsr.archs.latent_diffusion import TrainableWeights


class SharedReference(GeneratorPolicy):
    """Frozen reference running ``policy``'s modules with the trained tensors and buffers it had at creation.

    It behaves as the frozen deep copy did: no autograd graph (whatever ``grad_steps``), eval mode
    during its passes (the policy's train/eval flags are restored afterwards), the same random draws
    (the policy's own code draws them, from the caller's RNG stream).

    Args:
        policy (DiffusionPolicy): The bare policy (never a DDP wrapper: the reference runs outside DDP).
    """

    def __init__(self, policy):
        super().__init__()
        object.__setattr__(self, 'policy', policy)  # not a sub-module: eval()/to() of the reference leave it alone
        self.scale, self.stochastic = policy.scale, policy.stochastic
        self.names = tuple(policy.trainable_names())
        params = dict(policy.named_parameters())
        # buffers too: the copy froze them (e.g. a user tagger's BatchNorm statistics, updated in train mode)
        start = [(n, params[n]) for n in self.names] + list(policy.named_buffers())
        self.start_names = tuple(n for n, _ in start)
        for i, (_, tensor) in enumerate(start):
            self.register_buffer(f'start_{i}', tensor.detach().clone())
        self.eval()

    def start_tensors(self):
        """OrderedDict: policy name -> frozen tensor, the trained tensors first, then the buffers."""
        return OrderedDict((n, getattr(self, f'start_{i}')) for i, n in enumerate(self.start_names))

    def trainable_names(self):
        """The names the policy trains: what ``weights_module`` saves and loads (``net_g_ref.pth``)."""
        return list(self.names)

    def weights_module(self):
        return TrainableWeights(_StartState(self))

    def _run(self, **kwargs):
        """``policy.forward(**kwargs)`` with the start tensors, in eval mode and without a graph."""
        modes = [(m, m.training) for m in self.policy.modules()]
        self.policy.eval()
        try:
            with torch.no_grad():
                return functional_call(self.policy, self.start_tensors(), (), kwargs)
        finally:
            for module, training in modes:
                module.training = training

    def sample(self, lq, grad_steps=0):
        return self._run(lq=lq, grad_steps=0)

    def log_prob(self, trajectory):
        return self._run(trajectory=trajectory)


class _StartState:
    """``TrainableWeights``' owner interface over a reference's start tensors (the trained ones only)."""

    def __init__(self, reference):
        self.reference = reference

    def trainable_names(self):
        return self.reference.trainable_names()

    def state_dict(self):
        return self.reference.start_tensors()
