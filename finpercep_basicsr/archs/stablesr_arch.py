"""StableSR (Wang et al. 2024) as an RLHF policy on diffusers components.

- A time-aware LQ encoder (``TimeAwareEncoder``) maps the VAE latent of the bicubic-upsampled LQ
  and the current timestep to one feature map per UNet resolution.
- Every UNet ResNet block is modulated SPADE-style: a forward hook on the block's ``conv2`` (the
  last layer before the skip addition, where StableSR's ``ResBlockDual`` applies its SPADE)
  replaces its output h by ``norm(h) * (1 + gamma(c)) + beta(c)``, c = encoder feature at h's width.
- Sampling: DDIM from the LQ latent noised to the first timestep (StableSR starts from noise; the
  noised LQ start needs fewer steps), gradients through the last K steps (``DiffusionPolicy``).
- CFW (controllable feature wrapping) in the VAE decoder: for each decoder level except the first
  and last (StableSR's ``fusion_layer_<i_level>``), a forward pre-hook on the level's upsampler
  replaces its input d by ``d + w * fuse(e, d)`` with e the VAE-encoder feature of the LQ at the
  same level (captured by a pre-hook on the encoder's downsampler). w = ``cfw_weight`` in [0, 1]:
  0 = the plain decoder (most generative), 1 = most faithful to the LQ.
- Trainable: ``train_parts`` among ``structcond`` (the encoder), ``spade``, ``cfw``, ``lora``
  (UNet attention LoRA, ``lora_rank`` > 0); the SD base stays frozen.

Weights: ``sd_path`` is a diffusers SD 2.1 base folder (text encoder, tokenizer, scheduler, and
unet/vae when ``stablesr_path`` is not given); ``stablesr_path`` is the folder written by
``scripts/convert_stablesr_weights.py`` (``unet/``, ``vae/``, ``stablesr.safetensors``,
``stablesr_config.json``).
"""
import json
import os
import re

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from finpercep_basicsr.archs.diffusion_memory import HookContext
from finpercep_basicsr.archs.latent_diffusion import (DiffusionPolicy, PromptEmbedder, add_lora, check_folder, freeze,
                                                      latent_multiple, load_pretrained, load_safetensors, model_layout,
                                                      spaced_timesteps, upscale_input, vae_decode, vae_encode)
from finpercep_basicsr.archs.stablesr_modules import SPADE, CFWFusion, TimeAwareEncoder
from finpercep_basicsr.utils.errors import UserInputError

ATTN_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0']
TRAIN_PARTS = ('structcond', 'spade', 'cfw', 'lora')
EXTRA_FILE, CONFIG_FILE = 'stablesr.safetensors', 'stablesr_config.json'


def unet_resnets(unet):
    """``{'down_blocks.0.resnets.0': module, ...}``: every ResNet block of a diffusers UNet."""
    pattern = re.compile(r'(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.resnets\.\d+')
    return {name: m for name, m in unet.named_modules() if pattern.fullmatch(name)}


def cfw_levels(vae):
    """LDM decoder levels ``i_level`` that carry a CFW fusion layer (all but the first and last)."""
    return list(range(1, len(vae.config.block_out_channels) - 1))


class _Context(HookContext):
    """Per-call features shared by the hooks (deep-copied with the model, like its hooks)."""
    fields = ('struct', 'enc', 'capture')
    struct = None   # {width: encoder feature} during a UNet call
    enc = None      # {i_level: VAE-encoder feature} captured while encoding the LQ
    capture = False


class _SpadeHook:
    def __init__(self, spade, context):
        self.spade, self.context = spade, context

    def __call__(self, module, args, output):
        if self.context.struct is None:
            return output
        return self.spade(output, self.context.struct[output.size(-1)])


class _CaptureHook:
    def __init__(self, level, context):
        self.level, self.context = level, context

    def __call__(self, module, args):
        if self.context.capture:
            self.context.enc[self.level] = args[0]


class _FuseHook:
    def __init__(self, fusion, level, owner_context, weight_holder):
        self.fusion, self.level, self.context, self.holder = fusion, level, owner_context, weight_holder

    def __call__(self, module, args):
        if self.context.enc is None or self.holder.cfw_weight == 0:
            return None
        return (self.fusion(self.context.enc[self.level], args[0], self.holder.cfw_weight),) + tuple(args[1:])


class _Weight:
    cfw_weight = 0.0


def stablesr_config(encoder_opt, unet, vae):
    """Encoder/SPADE/CFW settings: StableSR's defaults, overridden by ``encoder_opt``."""
    levels = len(unet.config.block_out_channels)
    cfg = {'model_channels': 256, 'channel_mult': [1, 1, 2, 2][:levels] + [2] * max(0, levels - 4),
           'num_res_blocks': 2, 'attention_levels': list(range(min(3, levels))), 'out_channels': 256,
           'num_heads': 4, 'num_head_channels': -1, 'norm_groups': 32, 'spade_hidden': 128, 'num_fuse_block': 2,
           'num_grow_ch': 32}
    unknown = sorted(set(encoder_opt or {}) - set(cfg))
    if unknown:
        raise UserInputError(f'network_g.encoder_opt: unknown keys {unknown} (known: {sorted(cfg)})')
    cfg.update(encoder_opt or {})
    if len(cfg['channel_mult']) != levels:
        raise UserInputError(f'encoder channel_mult {cfg["channel_mult"]} needs one entry per UNet resolution '
                             f'({levels})')
    return cfg


@ARCH_REGISTRY.register()
class FinPercepStableSRGenerator(DiffusionPolicy):
    """StableSR policy (see the module docstring).

    Args:
        sd_path (str): diffusers SD base folder. stablesr_path (str | None): converted StableSR folder.
        scale (int): Upscaling factor. num_steps (int): DDIM steps (StableSR samples 200; RLHF a few).
        cfw_weight (float): CFW fidelity knob w in [0, 1].
        prompt, prompt_embeds_path, tagger: text conditioning (StableSR uses an empty prompt).
        train_parts (list[str]): Among ``structcond``, ``spade``, ``cfw``, ``lora``.
        lora_rank (int), lora_targets (list[str]): UNet LoRA (with ``lora`` in ``train_parts``).
        encoder_opt (dict): Overrides of the encoder/SPADE/CFW sizes (``stablesr_config``); a
            converted folder brings its own.
        sample_eta (float), rollout_eta (float): DDIM eta of ``sample`` and of GRPO/DPO rollouts.
        inference (dict | None): Test-time preset (``archs.sr_inference``): ``{preset: released}`` is
            ``RELEASED_INFERENCE``; validation/testing only.
    """
    # StableSR's README test command: sr_val_ddpm_text_T_vqganfin_old.py --ddpm_steps 200 --dec_w 0.5
    # --colorfix_type adain (or wavelet); that script samples DDPM (ancestral) on the 1000-step schedule
    # respaced to --ddpm_steps, from pure noise, with the LQ latent drawn from the VAE posterior
    RELEASED_INFERENCE = {'sampler': 'ddpm', 'num_steps': 200, 'start_point': 'noise', 'cfw_weight': 0.5,
                          'colour_fix': 'adain', 'vae_sample': True}
    INFERENCE_ATTRS = ('cfw_weight',)

    def __init__(self, sd_path, stablesr_path=None, scale=4, num_steps=4, cfw_weight=0.5, prompt='',
                 prompt_embeds_path=None, tagger=None, train_parts=('structcond', 'spade'), lora_rank=4,
                 lora_targets=None, encoder_opt=None, sample_eta=0.0, rollout_eta=1.0, inference=None):
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        check_folder(sd_path, {'scheduler': ('scheduler_config.json',)},
                     'Stable Diffusion base folder (network_g.sd_path)')
        models_root = stablesr_path or sd_path
        layout = {**model_layout('unet', 'vae'), **({'': (EXTRA_FILE, CONFIG_FILE)} if stablesr_path else {})}
        check_folder(models_root, layout, 'StableSR folder (network_g.stablesr_path)' if stablesr_path
                     else 'SD base folder (network_g.sd_path)')
        bad = sorted(set(train_parts) - set(TRAIN_PARTS))
        if bad or not train_parts:
            raise UserInputError(f'network_g.train_parts {list(train_parts)}: choose among {list(TRAIN_PARTS)}')
        if not 0 <= float(cfw_weight) <= 1:
            raise UserInputError(f'network_g.cfw_weight must be in [0, 1], got {cfw_weight}')
        self.scale, self.sample_eta, self.rollout_eta = int(scale), float(sample_eta), float(rollout_eta)
        self.stochastic = self.rollout_eta > 0 and num_steps >= 2
        self._context, self._weight = _Context(), _Weight()
        self.cfw_weight = float(cfw_weight)
        self.unet = freeze(load_pretrained(UNet2DConditionModel, models_root, 'unet', 'UNet'))
        self.vae = freeze(load_pretrained(AutoencoderKL, models_root, 'vae', 'VAE'))
        scheduler = DDPMScheduler.from_pretrained(sd_path, subfolder='scheduler')
        self.prediction_type, self.scheduler_config = scheduler.config.prediction_type, scheduler.config
        self.register_buffer('alphas_cumprod', scheduler.alphas_cumprod.float(), persistent=False)
        self.timesteps = spaced_timesteps(scheduler.config.num_train_timesteps, int(num_steps))
        self.prompt = PromptEmbedder(sd_path, prompt, prompt_embeds_path, tagger)
        self.configure_inference(inference)
        test_w = (self.inference or {}).get('cfw_weight', 0)
        if not 0 <= float(test_w) <= 1:
            raise UserInputError(f'network_g.inference.cfw_weight must be in [0, 1], got {test_w}')
        if stablesr_path:
            with open(os.path.join(stablesr_path, CONFIG_FILE)) as f:
                encoder_opt = {**json.load(f), **(encoder_opt or {})}
        cfg = self.config = stablesr_config(encoder_opt, self.unet, self.vae)
        self._build_extras(cfg)
        if stablesr_path:
            self._load_extras(os.path.join(stablesr_path, EXTRA_FILE))
        if 'lora' in train_parts:
            add_lora(self.unet, lora_rank, list(lora_targets or ATTN_TARGETS))
        for part, module in (('structcond', self.structcond), ('spade', self.spade), ('cfw', self.cfw)):
            module.requires_grad_(part in train_parts)
        self.multiple = latent_multiple(self.vae, self.unet)

    @property
    def cfw_weight(self):
        return self._weight.cfw_weight

    @cfw_weight.setter
    def cfw_weight(self, value):
        self._weight.cfw_weight = float(value)

    def extra_checkpoint_modules(self):
        return [self.structcond]

    def enable_vae_tiling(self, tile, overlap=0.25):
        if self.cfw_weight > 0:
            raise UserInputError('rlhf.vae_tile: StableSR\'s CFW fuses whole-image VAE-encoder features into the '
                                 'decoder; tiles would fuse features of another tile. Set network_g.cfw_weight: 0 '
                                 'or rlhf.vae_tile: null')
        super().enable_vae_tiling(tile, overlap)

    def _build_extras(self, cfg):
        """Encoder, one SPADE per UNet ResNet block (hooked on its conv2), CFW fusion layers (hooked)."""
        self.structcond = TimeAwareEncoder(self.unet.config.in_channels, cfg['model_channels'], cfg['channel_mult'],
                                           cfg['num_res_blocks'], cfg['attention_levels'], cfg['out_channels'],
                                           cfg['num_heads'], cfg['num_head_channels'], cfg['norm_groups'])
        self.spade = nn.ModuleDict()
        for name, resnet in unet_resnets(self.unet).items():
            key = name.replace('.', '_')  # ModuleDict keys cannot hold dots
            self.spade[key] = SPADE(resnet.conv2.out_channels, cfg['out_channels'], cfg['spade_hidden'],
                                    self.unet.config.norm_num_groups)
            resnet.conv2.register_forward_hook(_SpadeHook(self.spade[key], self._context))
        self.cfw = nn.ModuleDict()
        channels, n = self.vae.config.block_out_channels, len(self.vae.config.block_out_channels)
        for level in cfw_levels(self.vae):
            self.cfw[f'fusion_layer_{level}'] = CFWFusion(channels[level], cfg['num_fuse_block'], cfg['num_grow_ch'],
                                                          self.vae.config.norm_num_groups)
            self.vae.encoder.down_blocks[level].downsamplers[0].register_forward_pre_hook(
                _CaptureHook(level, self._context))
            self.vae.decoder.up_blocks[n - 1 - level].upsamplers[0].register_forward_pre_hook(
                _FuseHook(self.cfw[f'fusion_layer_{level}'], level, self._context, self._weight))

    def _load_extras(self, path):
        state = load_safetensors(path, 'StableSR encoder/SPADE/CFW weights')
        own = {k: v for k, v in self.state_dict().items() if k.split('.')[0] in ('structcond', 'spade', 'cfw')}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
                  if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise UserInputError(f'{path} does not fit the StableSR modules: missing {missing[:10]}, unexpected '
                                 f'{unexpected[:10]}, shape mismatch {shapes[:10]}')
        self.load_state_dict(state, strict=False)

    def prepare(self, lq):
        up = upscale_input(lq, self.scale, self.multiple)
        self._context.enc, self._context.capture = {}, True
        try:
            with torch.no_grad():
                z_lq = vae_encode(self.vae, up, sample=self.vae_sample)
        finally:
            self._context.capture = False
        enc, self._context.enc = self._context.enc, None
        return {'lq': lq, 'z_lq': z_lq, 'enc': enc, 'text': self.prompt(lq)[0]}

    def initial_latent(self, cond):
        a = self.alphas_cumprod[self.timesteps[0]]
        return a.sqrt() * cond['z_lq'] + (1 - a).sqrt() * torch.randn_like(cond['z_lq'])

    def predict(self, z, t, cond):
        tt = torch.full((z.size(0),), t, device=z.device, dtype=torch.long)
        self._context.struct = self.structcond(cond['z_lq'], tt)  # time-aware: recomputed at every step
        try:
            return self.unet(z, tt, encoder_hidden_states=cond['text'].to(z.dtype)).sample
        finally:
            self._context.struct = None

    def decode(self, z, cond):
        self._context.enc = cond['enc']
        try:
            return vae_decode(self.vae, z)
        finally:
            self._context.enc = None
