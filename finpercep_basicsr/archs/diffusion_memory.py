"""Memory options of the diffusion policies: half-precision base, gradient checkpointing, tiled VAE.

- ``cast_frozen``: every frozen parameter (UNet, ControlNet, VAE, text encoder, frozen StableSR
  parts) is stored in bf16/fp16, the trainable ones (LoRA, conv_in, StableSR encoder/SPADE) stay
  fp32 so the optimiser state and the updates keep full precision. The forward then runs under
  autocast (the RLHF model opens it), which feeds each layer in its weight's compute dtype.
- ``checkpoint_func``: the function diffusers' ``enable_gradient_checkpointing`` calls for each
  block. The policies pass per-call context (SeeSR's image embeddings, StableSR's SPADE features
  and CFW encoder features) to forward hooks through a context object; the recomputation runs in
  the backward pass, after the caller has reset it. The function snapshots the context when the
  block runs and restores it while the block is recomputed, so both passes see the same inputs.
- ``enable_vae_tiling``: diffusers' tiled encode/decode of ``AutoencoderKL`` (tiles blended over
  ``overlap``), with the tile size in pixels given by ``rlhf.vae_tile``.
"""
from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint

from finpercep_basicsr.utils.errors import UserInputError

PRECISIONS = {'no': None, 'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def precision_dtype(name, device):
    """The dtype of ``rlhf.mixed_precision`` (None for full precision), checked against the device.

    Raises:
        UserInputError: Unknown name, or fp16 without CUDA (CPU autocast and GradScaler have no fp16
            path worth using; bf16 needs no loss scaling).
    """
    key = 'no' if name in (None, False) else str(name).lower()
    if key not in PRECISIONS:
        raise UserInputError(f'rlhf.mixed_precision must be no, bf16 or fp16, got {name!r}')
    if key == 'fp16' and torch.device(device).type != 'cuda':
        raise UserInputError('rlhf.mixed_precision fp16 needs a CUDA GPU (fp16 autocast and loss scaling are '
                             'GPU features); use bf16 on CPU')
    return PRECISIONS[key]


def cast_frozen(module, dtype):
    """Store every frozen parameter of ``module`` in ``dtype``; trainable ones stay fp32.

    Returns:
        int: Number of parameters cast.
    """
    count = 0
    for p in module.parameters():
        if p.requires_grad:
            p.data = p.data.float()
        elif p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            count += 1
    return count


class HookContext:
    """Base of the per-call context objects the policies' forward hooks read.

    Subclasses list their fields in ``fields``; ``snapshot``/``restored`` let a checkpointed block
    be recomputed with the values it saw in the forward pass.
    """
    fields = ()

    def snapshot(self):
        return {k: getattr(self, k) for k in self.fields}

    @contextmanager
    def restored(self, values):
        saved = self.snapshot()
        for k, v in values.items():
            setattr(self, k, v)
        try:
            yield
        finally:
            for k, v in saved.items():
                setattr(self, k, v)


def checkpoint_func(context=None):
    """A diffusers ``gradient_checkpointing_func`` that recomputes blocks with ``context`` restored.

    Args:
        context (HookContext | None): The policy's hook context (None: plain non-reentrant checkpoint).
    """
    def run(module, *args):
        if context is None:
            return checkpoint(module.__call__, *args, use_reentrant=False)
        values = context.snapshot()

        def call(*inner):
            with context.restored(values):
                return module(*inner)
        return checkpoint(call, *args, use_reentrant=False)
    return run


def enable_checkpointing(model, context=None):
    """Turn on diffusers' per-block checkpointing of ``model`` (UNet, ControlNet, VAE)."""
    model.enable_gradient_checkpointing(checkpoint_func(context))


def enable_vae_tiling(vae, tile, overlap=0.25):
    """Tiled VAE encode/decode for images larger than ``tile`` px (latents larger than tile / f).

    Args:
        vae: diffusers ``AutoencoderKL``.
        tile (int): Tile side in pixels; a multiple of the VAE factor f.
        overlap (float): Fraction of a tile blended with its neighbours, in [0, 0.5].
    """
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    tile, overlap = int(tile), float(overlap)
    if tile < 2 * factor or tile % factor:
        raise UserInputError(f'rlhf.vae_tile must be a multiple of the VAE factor {factor} and at least '
                             f'{2 * factor} px, got {tile}')
    if not 0 <= overlap <= 0.5:
        raise UserInputError(f'rlhf.vae_tile_overlap must be in [0, 0.5], got {overlap}')
    vae.enable_tiling()
    vae.tile_sample_min_size = tile
    vae.tile_latent_min_size = tile // factor
    vae.tile_overlap_factor = overlap


def configure_policy_memory(policy, rlhf_opt, device):
    """Apply ``rlhf.mixed_precision``, ``rlhf.gradient_checkpointing`` and ``rlhf.vae_tile`` to ``policy``.

    Args:
        policy (GeneratorPolicy): The bare policy (before any DDP wrapping).
        rlhf_opt (dict | None): The ``rlhf`` options.
        device: The model's device.

    Returns:
        torch.dtype | None: The autocast dtype (None = full precision).

    Raises:
        UserInputError: An option the policy cannot honour (e.g. checkpointing on an RRDBNet policy).
    """
    opt = rlhf_opt or {}
    dtype = precision_dtype(opt.get('mixed_precision', 'no'), device)
    name = type(policy).__name__
    if dtype is not None and hasattr(policy, 'cast_base'):
        policy.cast_base(dtype)
    if opt.get('gradient_checkpointing', False):
        if not hasattr(policy, 'enable_gradient_checkpointing'):
            raise UserInputError(f'rlhf.gradient_checkpointing: {name} cannot checkpoint (only the diffusion '
                                 f'policies can); remove the option')
        policy.enable_gradient_checkpointing()
    if opt.get('vae_tile'):
        if not hasattr(policy, 'enable_vae_tiling'):
            raise UserInputError(f'rlhf.vae_tile: {name} has no VAE; remove the option')
        policy.enable_vae_tiling(opt['vae_tile'], opt.get('vae_tile_overlap', 0.25))
    return dtype
