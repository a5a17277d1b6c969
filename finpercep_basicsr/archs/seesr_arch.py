"""SeeSR (Wu et al. 2024) as an RLHF policy: ControlNet-conditioned multi-step latent diffusion.

The LQ image (bicubic-upsampled to the SR size) conditions a ControlNet whose residuals enter the
UNet; sampling starts from the LQ latent noised to the first timestep (SeeSR's ``start_point: lr``)
or from noise, and runs DDIM steps (eta = 0 deterministic for ``sample``, ``rollout_eta`` > 0 for
the stochastic trajectories GRPO/DPO need). LoRA adapters on the UNet (and optionally the
ControlNet) attention projections are the trainable part.

Weights the user supplies (nothing is downloaded):
- ``sd_path``: diffusers SD 2.1 base folder (``vae/ text_encoder/ tokenizer/ scheduler/``).
- ``seesr_path``: SeeSR's released folder (``seesr/``: ``unet/`` and ``controlnet/``, diffusers
  format). Their configs carry ``use_image_cross_attention: true``: every cross-attention block
  has a second list ``image_attentions`` (Transformer2DModel with 512-d context) attending to the
  RAM/DAPE image embeddings. They are rebuilt here with the same parameter names, loaded from the
  same weight files, and run right after the text attention when a tagger provides embeddings
  (``tagger`` returning ``(prompts, image_embeds)``, e.g. ``FinPercepRAMTagger`` with DAPE.pth).
  Without a tagger such a folder is refused (it would silently drop half of SeeSR's conditioning)
  unless ``allow_no_tagger`` is set: the image attention is then skipped, with a warning.
"""
import json
import os

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from finpercep_basicsr.archs.diffusion_memory import HookContext
from finpercep_basicsr.archs.latent_diffusion import (MODEL_WEIGHTS, DiffusionPolicy, PromptEmbedder, add_lora,
                                                      check_folder, freeze, latent_multiple, load_pretrained,
                                                      load_safetensors, model_layout, spaced_timesteps,
                                                      upscale_input, vae_decode, vae_encode)
from finpercep_basicsr.utils.errors import UserInputError

ATTN_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0']


class _Context(HookContext):
    """Per-call image embeddings shared by the hooks of one model (deep-copied with it)."""
    fields = ('embeds',)
    embeds = None


class _ImageAttentionHook:
    """Forward hook running SeeSR's image cross-attention after a text-attention block."""

    def __init__(self, image_attn, context):
        self.image_attn, self.context = image_attn, context

    def __call__(self, module, args, output):
        if self.context.embeds is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output.sample
        hidden = self.image_attn(hidden, encoder_hidden_states=self.context.embeds, return_dict=False)[0]
        return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else type(output)(sample=hidden)


def _read_weights(folder):
    for name in MODEL_WEIGHTS:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            if name.endswith('.safetensors'):
                return load_safetensors(path, 'SeeSR weights')
            return torch.load(path, map_location='cpu', weights_only=True)
    raise UserInputError(f'{folder}: no weight file ({", ".join(MODEL_WEIGHTS)})')


def add_image_attentions(model, context, dim=512):
    """Give every cross-attention block of ``model`` SeeSR's ``image_attentions`` and their hooks."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    blocks = list(model.down_blocks) + [model.mid_block] + list(getattr(model, 'up_blocks', []))
    for block in blocks:
        if block is None or not hasattr(block, 'attentions'):
            continue
        image_attns = nn.ModuleList()
        for attn in block.attentions:
            cfg = dict(attn.config)
            cfg['cross_attention_dim'] = dim
            image_attns.append(Transformer2DModel(**{k: v for k, v in cfg.items() if not k.startswith('_')}))
            attn.register_forward_hook(_ImageAttentionHook(image_attns[-1], context))
        block.image_attentions = image_attns


def load_seesr_part(cls, seesr_path, subfolder, context):
    """A SeeSR UNet/ControlNet folder, with the image cross-attention it was trained with."""
    from diffusers.utils import logging as dlogging
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # the image-attention weights diffusers reports as unused are loaded below
    try:
        model = load_pretrained(cls, seesr_path, subfolder, f'SeeSR {subfolder}')
    finally:
        dlogging.set_verbosity(level)
    folder = os.path.join(seesr_path, subfolder)
    with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    if config.get('use_image_cross_attention'):
        add_image_attentions(model, context, int(config.get('image_cross_attention_dim', 512)))
        state = {k: v for k, v in _read_weights(folder).items() if 'image_attentions' in k}
        own = {k: v for k, v in model.state_dict().items() if 'image_attentions' in k}
        missing = sorted(set(own) - set(state))
        bad = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or bad:
            raise UserInputError(f'{folder}: image cross-attention weights do not fit: missing {missing[:5]}, '
                                 f'shape mismatch {bad[:5]}')
        model.load_state_dict(state, strict=False)
    return freeze(model)


@ARCH_REGISTRY.register()
class FinPercepSeeSRGenerator(DiffusionPolicy):
    """SeeSR policy (see the module docstring).

    Args:
        sd_path (str): SD base folder. seesr_path (str): SeeSR folder (``unet/``, ``controlnet/``).
        scale (int): Upscaling factor. num_steps (int): DDIM steps (SeeSR uses 50; RLHF a few).
        start_point (str): ``lr`` (noised LQ latent, SeeSR's default) or ``noise``.
        guidance_scale (float): Classifier-free guidance (1 = off; SeeSR 5.5) with ``negative_prompt``.
        conditioning_scale (float): ControlNet residual scale.
        prompt, prompt_embeds_path, tagger: text conditioning (``PromptEmbedder``).
        allow_no_tagger (bool): Run a folder with image cross-attention without a tagger (the image
            attention is skipped); otherwise that is an error naming ``network_g.tagger``.
        lora_rank (int), lora_targets (list[str]): UNet LoRA; ``controlnet_lora`` adds it there too.
        sample_eta (float): DDIM eta of ``sample`` (0 = deterministic). rollout_eta (float): eta of
            ``sample_trajectory`` (> 0 for GRPO/DPO).
        inference (dict | None): Test-time preset (``archs.sr_inference``): ``{preset: released}`` is
            ``RELEASED_INFERENCE``; validation/testing only.
    """
    # SeeSR's scripts/test_seesr.sh and README "default inference settings": --num_inference_steps 50,
    # --guidance_scale 5.5, --start_point lr; test_seesr.py: the DDPMScheduler of the SD folder steps the
    # pipeline (ancestral), negative prompt "dotted, noise, blur, lowres, smooth" (this class's default),
    # --align_method adain, --start_steps 999 (pipeline_seesr.py noises the LQ latent to t=999 with
    # scheduler.add_noise), the LQ latent from vae.encode(...).latent_dist.sample()
    RELEASED_INFERENCE = {'sampler': 'ddpm', 'num_steps': 50, 'start_point': 'lr', 'start_timestep': 999,
                          'guidance_scale': 5.5, 'colour_fix': 'adain', 'vae_sample': True}
    INFERENCE_ATTRS = ('guidance_scale', 'conditioning_scale')

    def __init__(self, sd_path, seesr_path, scale=4, num_steps=4, start_point='lr', guidance_scale=1.0,
                 negative_prompt='dotted, noise, blur, lowres, smooth', conditioning_scale=1.0, prompt='',
                 prompt_embeds_path=None, tagger=None, lora_rank=4, lora_targets=None, controlnet_lora=False,
                 sample_eta=0.0, rollout_eta=1.0, inference=None, allow_no_tagger=False):
        super().__init__()
        from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
        check_folder(sd_path, {**model_layout('vae'), 'scheduler': ('scheduler_config.json',)},
                     'Stable Diffusion base folder (network_g.sd_path)')
        check_folder(seesr_path, model_layout('unet', 'controlnet'), 'SeeSR folder (network_g.seesr_path)')
        if start_point not in ('lr', 'noise'):
            raise UserInputError(f'network_g.start_point must be lr or noise, got {start_point!r}')
        self.scale, self.start_point = int(scale), start_point
        self.guidance_scale, self.conditioning_scale = float(guidance_scale), float(conditioning_scale)
        self.sample_eta, self.rollout_eta = float(sample_eta), float(rollout_eta)
        self.stochastic = self.rollout_eta > 0 and num_steps >= 2
        self._context = _Context()
        self.vae = freeze(load_pretrained(AutoencoderKL, sd_path, 'vae', 'VAE'))
        self.unet = load_seesr_part(UNet2DConditionModel, seesr_path, 'unet', self._context)
        self.controlnet = load_seesr_part(ControlNetModel, seesr_path, 'controlnet', self._context)
        scheduler = DDPMScheduler.from_pretrained(sd_path, subfolder='scheduler')
        self.prediction_type, self.scheduler_config = scheduler.config.prediction_type, scheduler.config
        self.register_buffer('alphas_cumprod', scheduler.alphas_cumprod.float(), persistent=False)
        self.timesteps = spaced_timesteps(scheduler.config.num_train_timesteps, int(num_steps))
        self.prompt = PromptEmbedder(sd_path, prompt, prompt_embeds_path, tagger)
        self.configure_inference(inference)
        test_guidance = (self.inference or {}).get('guidance_scale', 1.0)  # the preset may guide, training not
        self.negative = (PromptEmbedder(sd_path, negative_prompt) if max(self.guidance_scale, test_guidance) > 1
                         else None)
        if tagger is None and hasattr(self.unet.down_blocks[0], 'image_attentions'):
            if not allow_no_tagger:
                raise UserInputError(f'{seesr_path} has image cross-attention (use_image_cross_attention) but '
                                     'network_g.tagger is not set: give the RAM/DAPE tagger (FinPercepRAMTagger) '
                                     'or set network_g.allow_no_tagger: true to skip the image attention')
            get_root_logger().warning('SeeSR: no tagger with image embeddings: the image cross-attention is skipped')
        add_lora(self.unet, lora_rank, list(lora_targets or ATTN_TARGETS))
        if controlnet_lora:
            add_lora(self.controlnet, lora_rank, list(lora_targets or ATTN_TARGETS))
        self.multiple = latent_multiple(self.vae, self.unet)

    def prepare(self, lq):
        up = upscale_input(lq, self.scale, self.multiple)
        with torch.no_grad():
            z_lq = vae_encode(self.vae, up, sample=self.vae_sample)
        text, image = self.prompt(lq)
        return {'lq': lq, 'up': up, 'z_lq': z_lq, 'text': text, 'image': image}

    def initial_latent(self, cond):
        noise = torch.randn_like(cond['z_lq'])
        if self.start_point == 'noise':
            return noise
        a = self.alphas_cumprod[self.timesteps[0]]
        return a.sqrt() * cond['z_lq'] + (1 - a).sqrt() * noise

    def _eps(self, z, t, text, image, up):
        self._context.embeds = image
        try:
            tt = torch.full((z.size(0),), t, device=z.device, dtype=torch.long)
            down, mid = self.controlnet(z, tt, encoder_hidden_states=text, controlnet_cond=up,
                                        conditioning_scale=self.conditioning_scale, return_dict=False)
            return self.unet(z, tt, encoder_hidden_states=text, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid).sample
        finally:
            self._context.embeds = None

    def predict(self, z, t, cond):
        if self.guidance_scale <= 1:
            return self._eps(z, t, cond['text'], cond['image'], cond['up'])
        neg = self.negative(cond['lq'])[0]
        image = None if cond['image'] is None else torch.cat([cond['image']] * 2)
        out = self._eps(torch.cat([z, z]), t, torch.cat([neg, cond['text']]), image, torch.cat([cond['up']] * 2))
        uncond, text = out.chunk(2)
        return uncond + self.guidance_scale * (text - uncond)

    def decode(self, z, cond):
        return vae_decode(self.vae, z)
