"""Latent-diffusion plumbing shared by the diffusion SR policies (OSEDiff, SeeSR, StableSR).

- Safe loading of diffusers/transformers folders: the expected layout is checked first and a
  ``UserInputError`` lists what is missing; weights load from safetensors or with
  ``weights_only=True`` (diffusers and transformers both do so for ``.bin`` files).
- VAE encode/decode with the scaling factor, images in [0, 1].
- Fixed prompt embeddings (computed once from text, or read from a safetensors file) and an
  optional user tagger (an arch in BasicSR's registry mapping images to prompts).
- LoRA adapters via ``model.add_adapter(LoraConfig(...))``: base frozen, adapters in fp32.
- A DDIM step with a Gaussian transition (eta > 0) and its log-probability, for ReFL's truncated
  backpropagation and for the policy-gradient algorithms (GRPO, DPO).
- ``TrainableWeights``: the view of a policy that checkpoints store (adapters and other trainable
  tensors only, never the frozen multi-GB base).
- Memory options (``diffusion_memory``): half-precision frozen base under autocast, per-block
  gradient checkpointing, tiled VAE.
"""
import math
import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from finpercep_basicsr.archs.diffusion_memory import cast_frozen, enable_checkpointing, enable_vae_tiling
from finpercep_basicsr.archs.generator_policy import GeneratorPolicy
from finpercep_basicsr.archs.sr_inference import InferencePresets
from finpercep_basicsr.utils.errors import UserInputError

MODEL_WEIGHTS = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin', 'model.safetensors',
                 'pytorch_model.bin')
TOKENIZER_FILES = ('vocab.json', 'merges.txt')


def check_folder(root, layout, what):
    """Raise a ``UserInputError`` listing every missing file of ``layout`` under ``root``.

    Args:
        root (str): Folder given by the user.
        layout (dict): ``subfolder -> tuple of alternatives groups``; each entry is a tuple of file
            names of which at least one must exist (e.g. the safetensors or the bin weights).
        what (str): Words for the message, e.g. ``'Stable Diffusion base folder (sd_path)'``.
    """
    if root is None or not os.path.isdir(str(root)):
        raise UserInputError(f'{what}: folder {root!r} does not exist; expected sub-folders '
                             + ', '.join(f'{k}/' for k in layout))
    missing = []
    for sub, groups in layout.items():
        for group in groups:
            group = (group,) if isinstance(group, str) else group
            if not any(os.path.isfile(os.path.join(root, sub, name)) for name in group):
                missing.append(os.path.join(sub, ' or '.join(group)))
    if missing:
        raise UserInputError(f'{what} {root} is missing: ' + '; '.join(missing))


def model_layout(*subfolders):
    """Layout entry for diffusers/transformers model sub-folders (config + one weight file)."""
    return {sub: ('config.json', MODEL_WEIGHTS) for sub in subfolders}


def load_pretrained(cls, root, subfolder, what):
    """``cls.from_pretrained(root, subfolder=...)`` offline, wrapping errors with the folder name."""
    try:
        return cls.from_pretrained(root, subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise UserInputError(f'cannot load {what} from {os.path.join(root, subfolder)}: {err}') from err


def load_safetensors(path, what):
    """A safetensors file as a dict of CPU tensors (no code can run from it)."""
    from safetensors.torch import load_file
    if not os.path.isfile(path):
        raise UserInputError(f'{what} not found: {path}')
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types for foreign files
        raise UserInputError(f'cannot read {what} {path}: {err}') from err


def freeze(module):
    module.requires_grad_(False)
    return module


# ---- images and latents ---------------------------------------------------------------------
def vae_encode(vae, img, sample=False):
    """(B, 3, H, W) in [0, 1] -> scaled fp32 latent (B, C, H/f, W/f); the posterior mode unless ``sample``.

    fp32 whatever the VAE's dtype: the sampler's arithmetic on latents stays in full precision.
    """
    dist = vae.encode(img * 2 - 1).latent_dist
    z = dist.sample() if sample else dist.mode()
    return z.float() * vae.config.scaling_factor


def vae_decode(vae, z):
    """Scaled latent -> (B, 3, H, W) in [0, 1], fp32 whatever the VAE's dtype (rewards score fp32)."""
    return ((vae.decode(z / vae.config.scaling_factor).sample.float().clamp(-1, 1) + 1) / 2)


def upscale_input(lq, scale, multiple):
    """Bicubic ``scale``x upsampling (the diffusion models work at the target size), size checked."""
    up = F.interpolate(lq, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1) if scale != 1 else lq
    if up.size(-1) % multiple or up.size(-2) % multiple:
        raise UserInputError(f'SR size {tuple(up.shape[-2:])} must be a multiple of {multiple} '
                             f'(VAE and UNet downsampling): crop the LQ (gt_size) accordingly')
    return up


def latent_multiple(vae, unet):
    """Pixel multiple the SR size must have: VAE factor x UNet downsampling factor."""
    vae_f = 2 ** (len(vae.config.block_out_channels) - 1)
    unet_f = 2 ** (len(unet.config.block_out_channels) - 1)
    return vae_f * unet_f


# ---- prompts --------------------------------------------------------------------------------
class PromptEmbedder(nn.Module):
    """Text conditioning: a fixed prompt (embedded once), precomputed embeddings, or a user tagger.

    Args:
        sd_path (str | None): Base folder with ``tokenizer/`` and ``text_encoder/`` (needed unless
            ``embeds_path`` is given).
        prompt (str): Fixed prompt for every image (OSEDiff/SeeSR use tagger prompts; a fixed text
            needs no tagger weights).
        embeds_path (str | None): safetensors file with ``prompt_embeds`` (L, D) or (1, L, D).
        tagger (dict | None): Options of an arch in BasicSR's registry mapping (B, 3, H, W) images
            in [0, 1] to a list of B prompts, or to ``(prompts, image_embeds)`` (RAM-style taggers such
            as ``FinPercepRAMTagger``: SeeSR's image cross-attention uses the embeddings); the text
            encoder is then kept and ``prompt`` is not used.
    """

    def __init__(self, sd_path=None, prompt='', embeds_path=None, tagger=None):
        super().__init__()
        self.tokenizer = self.text_encoder = self.tagger = None
        if embeds_path is not None and tagger is None:
            embeds = load_safetensors(embeds_path, 'prompt embeddings (prompt_embeds_path)')
            if 'prompt_embeds' not in embeds:
                raise UserInputError(f'{embeds_path} has no "prompt_embeds" tensor (it has: {", ".join(embeds)})')
            fixed = embeds['prompt_embeds'].float()
            fixed = fixed[None] if fixed.dim() == 2 else fixed
        else:
            from transformers import CLIPTextModel, CLIPTokenizer
            layout = {'tokenizer': TOKENIZER_FILES, **model_layout('text_encoder')}
            check_folder(sd_path, layout, 'text encoder folder (sd_path)')
            self.tokenizer = CLIPTokenizer.from_pretrained(sd_path, subfolder='tokenizer', local_files_only=True)
            self.text_encoder = freeze(load_pretrained(CLIPTextModel, sd_path, 'text_encoder', 'text encoder'))
            fixed = self.encode([prompt])
            if tagger is None:  # the encoder is not needed any more: free it
                self.tokenizer = self.text_encoder = None
            else:
                from copy import deepcopy

                from basicsr.archs import build_network
                self.tagger = freeze(build_network(deepcopy(tagger)))
        self.register_buffer('fixed', fixed, persistent=False)

    @torch.no_grad()
    def encode(self, prompts):
        ids = self.tokenizer(prompts, padding='max_length', max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors='pt').input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0].float()

    def forward(self, lq):
        """Text embeddings (B, L, D) for the batch ``lq`` (B, 3, H, W), and tagger image embeddings or None."""
        if self.tagger is None:
            return self.fixed.expand(lq.size(0), -1, -1), None
        with torch.no_grad():
            out = self.tagger(lq)
            prompts, image_embeds = out if isinstance(out, tuple) else (out, None)
            return self.encode(list(prompts)), image_embeds


# ---- LoRA -----------------------------------------------------------------------------------
def add_lora(model, rank, target_modules, adapter_name='default', alpha=None):
    """Add a LoRA adapter (peft) to a diffusers model; its weights are fp32 and trainable.

    Args:
        model: diffusers ``ModelMixin`` (UNet, VAE, ControlNet).
        rank (int): LoRA rank.
        target_modules (list[str] | str): Module names or a peft regex.
        adapter_name (str): Adapter name (released checkpoints name their tensors with it).
        alpha (float | None): ``lora_alpha``; None keeps peft's default (8), as OSEDiff's release.
    """
    from peft import LoraConfig
    kwargs = {} if alpha is None else {'lora_alpha': alpha}
    if not target_modules:
        raise UserInputError(f'LoRA adapter {adapter_name}: no target modules matched')
    model.add_adapter(LoraConfig(r=int(rank), init_lora_weights='gaussian', target_modules=target_modules, **kwargs),
                      adapter_name=adapter_name)
    for name, p in model.named_parameters():
        if 'lora_' in name:
            p.data = p.data.float()  # adapters train in fp32 even over a half-precision base
            p.requires_grad_(True)


# ---- samplers -------------------------------------------------------------------------------
def split_prediction(model_out, x_t, alpha_t, prediction_type):
    """(x0, eps) from a UNet output of type ``epsilon``, ``v_prediction`` or ``sample``."""
    a, s = alpha_t.sqrt(), (1 - alpha_t).sqrt()
    if prediction_type == 'epsilon':
        return (x_t - s * model_out) / a, model_out
    if prediction_type == 'v_prediction':
        return a * x_t - s * model_out, s * x_t + a * model_out
    if prediction_type == 'sample':
        return model_out, (x_t - a * model_out) / s
    raise UserInputError(f'unsupported scheduler prediction_type {prediction_type!r}')


def ddim_transition(model_out, x_t, t, t_prev, alphas_cumprod, prediction_type, eta):
    """Mean and std of the DDIM transition x_t -> x_{t_prev} (Song et al. eq. 12).

    ``t_prev < 0`` is the final step to the clean latent (alpha = 1, deterministic: std 0).

    Returns:
        tuple: (mean (B, C, h, w), std (float), x0 prediction).
    """
    alpha_t = alphas_cumprod[t]
    alpha_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones_like(alpha_t)
    x0, eps = split_prediction(model_out, x_t, alpha_t, prediction_type)
    var = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    std = eta * var.clamp(min=0).sqrt()
    mean = alpha_prev.sqrt() * x0 + (1 - alpha_prev - std ** 2).clamp(min=0).sqrt() * eps
    return mean, float(std), x0


def gaussian_log_prob(x, mean, std):
    """Per-sample log-density of ``x`` under N(mean, std^2), averaged over latent elements: (B,).

    The mean (not the sum) keeps importance ratios of large latents in a usable range, as
    DDPO/Flow-GRPO implementations do.
    """
    x, mean = x.float(), mean.float()  # ratios of half-precision densities would be too coarse
    return (-((x - mean) ** 2) / (2 * std ** 2) - math.log(std) - 0.5 * math.log(2 * math.pi)).flatten(1).mean(1)


def spaced_timesteps(num_train, num_steps, start=None):
    """``num_steps`` integer timesteps from ``start`` (default num_train - 1) down to about 0."""
    start = num_train - 1 if start is None else int(start)
    if num_steps < 1:
        raise UserInputError(f'num_steps must be >= 1, got {num_steps}')
    return [int(round(start - i * (start + 1) / num_steps)) for i in range(num_steps)]


class TrainableWeights(nn.Module):
    """The trainable tensors of a policy as a module: what ``net_g_<iter>.pth`` stores.

    ``state_dict`` returns the live tensors of ``owner`` whose names ``owner.trainable_names()``
    lists (EMA updates them in place); ``load_state_dict`` writes into them.
    """

    def __init__(self, owner):
        super().__init__()
        object.__setattr__(self, '_owner', owner)  # not a sub-module: no second copy of the weights

    def state_dict(self, *args, **kwargs):
        names = set(self._owner.trainable_names())
        return OrderedDict((k, v) for k, v in self._owner.state_dict().items() if k in names)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if strict and (missing or unexpected):
            raise RuntimeError(f'adapter weights do not match: missing {missing[:10]}, unexpected {unexpected[:10]}')
        with torch.no_grad():
            for k, v in state_dict.items():
                if k in own:
                    own[k].copy_(v)
        return missing, unexpected


class DiffusionPolicy(InferencePresets, GeneratorPolicy):
    """Base of the latent-diffusion policies: trainable-name bookkeeping and the DDIM loop.

    Multi-step subclasses implement ``prepare(lq) -> cond`` (dict), ``initial_latent(cond)``,
    ``predict(z, t, cond)`` (UNet output) and ``decode(z, cond)``; they set ``timesteps`` (list,
    descending), ``alphas_cumprod``, ``prediction_type``, ``sample_eta`` and ``rollout_eta``.

    Test-time presets (``network_g.inference``, ``infer``) come from ``archs.sr_inference.InferencePresets``.

    Memory options (``rlhf.mixed_precision``, ``rlhf.gradient_checkpointing``, ``rlhf.vae_tile``)
    act on the diffusers models the subclass holds as ``unet``, ``controlnet``, ``vae`` and on the
    modules ``extra_checkpoint_modules()`` lists; hooks read ``self._context`` (a ``HookContext``).
    """
    base_dtype = None

    def autocast(self):
        """Autocast to the base dtype (a no-op at full precision): every public entry runs under it."""
        device = self.alphas_cumprod.device.type
        return torch.autocast(device, dtype=self.base_dtype or torch.float32, enabled=self.base_dtype is not None)

    def cast_base(self, dtype):
        """Store the frozen base in ``dtype`` (bf16/fp16); adapters and other trainable tensors stay fp32."""
        self.base_dtype = dtype
        cast_frozen(self, dtype)

    def diffusers_models(self):
        return [m for m in (getattr(self, n, None) for n in ('unet', 'controlnet', 'vae')) if m is not None]

    def extra_checkpoint_modules(self):
        """Own modules with a ``gradient_checkpointing`` flag (StableSR's LQ encoder)."""
        return []

    def enable_gradient_checkpointing(self):
        """Per-block checkpointing of the UNet, ControlNet and VAE (+ extra modules) in the backward."""
        for model in self.diffusers_models():
            enable_checkpointing(model, getattr(self, '_context', None))
        for module in self.extra_checkpoint_modules():
            module.gradient_checkpointing = True

    def enable_vae_tiling(self, tile, overlap=0.25):
        enable_vae_tiling(self.vae, tile, overlap)

    def forward(self, lq=None, grad_steps=1, trajectory=None):
        """``sample(lq, grad_steps)``, or ``log_prob(trajectory)``.

        DDP wraps this one entry, so the policy-gradient algorithms call it for their
        log-probabilities: only then are the gradients all-reduced.
        """
        if trajectory is not None:
            return self.log_prob(trajectory)
        return self.sample(lq, grad_steps=grad_steps)

    def trainable_names(self):
        """Names of the trained tensors (adapters and any other tensor with ``requires_grad``); a frozen copy keeps
        those of the policy it copies, so the EMA stores and averages the same tensors."""
        kept = getattr(self, '_copied_names', None)
        return list(kept) if kept is not None else [n for n, p in self.named_parameters() if p.requires_grad]

    def frozen_copy(self):
        copy = super().frozen_copy()
        copy._copied_names = tuple(self.trainable_names())
        return copy

    def make_reference(self):
        """``SharedReference``: these modules with frozen copies of the trained tensors (the base is not copied)."""
        from finpercep_basicsr.archs.shared_reference import SharedReference  # that module builds on this one
        return SharedReference(self)

    def weights_module(self):
        return TrainableWeights(self)

    def _step(self, z, i, cond, eta):
        t = self.timesteps[i]
        t_prev = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1
        mean, std, _ = ddim_transition(self.predict(z, t, cond), z, t, t_prev, self.alphas_cumprod,
                                       self.prediction_type, eta)
        return mean, std

    def _loop(self, lq, grad_steps, eta, record):
        cond = self.prepare(lq)
        z = self.initial_latent(cond)
        n = len(self.timesteps)
        states, actions, steps, log_probs = [], [], [], []
        for i in range(n):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= n - grad_steps):
                if i < n - grad_steps:
                    z = z.detach()
                mean, std = self._step(z, i, cond, eta)
                nxt = mean + std * torch.randn_like(mean) if std > 0 else mean
                if record and std > 0:
                    states.append(z.detach())
                    actions.append(nxt.detach())
                    steps.append(i)
                    log_probs.append(gaussian_log_prob(nxt, mean, std).detach())
            z = nxt
        return self.decode(z, cond), cond, states, actions, steps, log_probs

    def sample(self, lq, grad_steps=1):
        with self.autocast(), torch.set_grad_enabled(torch.is_grad_enabled() and grad_steps > 0):
            return self._loop(lq, grad_steps, self.sample_eta, False)[0]

    @torch.no_grad()
    def sample_trajectory(self, lq):
        from finpercep_basicsr.archs.generator_policy import Trajectory
        with self.autocast():
            sr, cond, states, actions, steps, log_probs = self._loop(lq, 0, self.rollout_eta, True)
        if not states:
            raise UserInputError(f'{type(self).__name__}: rollout_eta is 0 or there is one step: the sampler '
                                 f'is deterministic, grpo/dpo need rollout_eta > 0 and num_steps >= 2')
        return Trajectory(sr=sr, states=states, actions=actions, timesteps=steps, log_probs=torch.stack(log_probs, 1),
                          cond={'lq': cond['lq']})

    def log_prob(self, trajectory):
        with self.autocast():
            cond = self.prepare(trajectory.cond['lq'])
            out = []
            for z, nxt, i in zip(trajectory.states, trajectory.actions, trajectory.timesteps):
                mean, std = self._step(z, i, cond, self.rollout_eta)
                out.append(gaussian_log_prob(nxt, mean, std))
            return torch.stack(out, 1)
