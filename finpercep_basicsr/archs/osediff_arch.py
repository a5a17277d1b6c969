"""OSEDiff (Wu et al. 2024) as an RLHF policy: one-step SR in the Stable Diffusion latent space.

SR = D( x0( UNet_lora( E_lora(up(LQ)), t=999, prompt ) ) ): the bicubic-upsampled LQ is encoded
by the VAE encoder (LoRA), one UNet step (LoRA) at the fixed timestep predicts the clean latent,
and the frozen VAE decoder maps it back to pixels.

Weights the user supplies (nothing is downloaded):
- ``sd_path``: a diffusers Stable Diffusion base folder (``unet/ vae/ text_encoder/ tokenizer/
  scheduler/``), OSEDiff uses stabilityai/stable-diffusion-2-1-base.
- ``osediff_path`` (optional): OSEDiff's released ``osediff.pkl``: a torch file with ``rank_unet``,
  ``rank_vae``, ``unet_lora_{encoder,decoder,others}_modules``, ``vae_lora_encoder_modules`` and
  ``state_dict_unet`` / ``state_dict_vae`` (peft LoRA tensors named with the adapters
  ``default_encoder|default_decoder|default_others``, plus the UNet ``conv_in`` weights). It is read
  with ``weights_only=True`` (plain tensors, lists, ints: no code runs). Without it, fresh LoRA
  adapters are added to the modules OSEDiff selects.
"""
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from finpercep_basicsr.archs.latent_diffusion import (DiffusionPolicy, PromptEmbedder, add_lora, check_folder,
                                                      freeze, gaussian_log_prob, latent_multiple, load_pretrained,
                                                      model_layout, split_prediction, upscale_input, vae_decode,
                                                      vae_encode)
from finpercep_basicsr.utils.checkpoint import load_checkpoint
from finpercep_basicsr.utils.errors import UserInputError

# module-name patterns OSEDiff puts LoRA on (its training script's selection)
UNET_PATTERNS = ('to_k', 'to_q', 'to_v', 'to_out.0', 'conv', 'conv1', 'conv2', 'conv_in', 'conv_shortcut', 'conv_out',
                 'proj_out', 'proj_in', 'ff.net.2', 'ff.net.0.proj')
VAE_PATTERNS = ('conv1', 'conv2', 'conv_in', 'conv_shortcut', 'conv', 'conv_out', 'to_k', 'to_q', 'to_v', 'to_out.0')
PKL_KEYS = ('rank_unet', 'rank_vae', 'unet_lora_encoder_modules', 'unet_lora_decoder_modules',
            'unet_lora_others_modules', 'vae_lora_encoder_modules', 'state_dict_unet', 'state_dict_vae')
UNET_ADAPTERS = ('default_encoder', 'default_decoder', 'default_others')


def osediff_lora_targets(unet, vae):
    """OSEDiff's LoRA targets: UNet modules split into encoder/decoder/others, VAE encoder modules.

    Works on plain models and on models that already carry adapters (``base_layer`` names).
    """
    enc, dec, others = [], [], []
    for name in dict.fromkeys(n.replace('.base_layer', '') for n, _ in unet.named_parameters()):
        if 'bias' in name or 'norm' in name or 'lora' in name:
            continue
        if any(p in name for p in UNET_PATTERNS):
            module = name.replace('.weight', '')
            part = enc if ('down_blocks' in name or 'conv_in' in name) else dec if 'up_blocks' in name else others
            part.append(module)
    vae_enc = []
    for name in dict.fromkeys(n.replace('.base_layer', '') for n, _ in vae.named_parameters()):
        if 'bias' in name or 'norm' in name or 'lora' in name:
            continue
        if ('encoder' in name and any(p in name for p in VAE_PATTERNS)) or (
                'quant_conv' in name and 'post_quant_conv' not in name):
            vae_enc.append(name.replace('.weight', ''))
    return {'unet_lora_encoder_modules': enc, 'unet_lora_decoder_modules': dec, 'unet_lora_others_modules': others,
            'vae_lora_encoder_modules': sorted(set(vae_enc))}


def load_osediff_pkl(path):
    """Read and validate OSEDiff's released checkpoint (``weights_only=True``)."""
    try:
        ckpt = load_checkpoint(path, 'OSEDiff checkpoint (osediff_path)')
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from err
    except UserInputError as err:
        raise UserInputError(f'{err}\nOSEDiff checkpoints are read with weights_only=True: only tensors, lists, '
                             f'numbers and strings are allowed, never pickled code') from err
    missing = [k for k in PKL_KEYS if k not in ckpt]
    if missing:
        raise UserInputError(f'{path} is not an OSEDiff checkpoint: missing {", ".join(missing)} '
                             f'(expected the keys {", ".join(PKL_KEYS)})')
    return ckpt


def copy_named(model, state, names, path, what):
    """Copy ``state[name]`` into the parameters ``names`` of ``model``; list what does not fit."""
    params = dict(model.named_parameters())
    problems = [n for n in names if n not in state] + [
        f'{n} {tuple(state[n].shape)} vs {tuple(params[n].shape)}' for n in names
        if n in state and state[n].shape != params[n].shape]
    if problems:
        raise UserInputError(f'{path}: {what} does not fit the base model ({len(problems)} problems): '
                             + ', '.join(problems[:10]))
    with torch.no_grad():
        for n in names:
            params[n].copy_(state[n])


@ARCH_REGISTRY.register()
class FinPercepOSEDiffGenerator(DiffusionPolicy):
    """One-step OSEDiff policy; deterministic, or Gaussian in the latent for GRPO/DPO.

    Args:
        sd_path (str): diffusers SD base folder (see the module docstring).
        osediff_path (str | None): OSEDiff's ``osediff.pkl``; None adds fresh LoRA adapters.
        scale (int): Upscaling factor (the LQ is bicubic-upsampled before encoding).
        lora_rank_unet, lora_rank_vae (int): Ranks of fresh adapters (the pkl states its own).
        timestep (int): The fixed timestep (OSEDiff: 999).
        prompt (str), prompt_embeds_path (str), tagger (dict): Text conditioning (``PromptEmbedder``).
        explore_sigma (float): Std of the Gaussian policy on the predicted latent used by
            ``sample_trajectory`` (GRPO/DPO); 0 = deterministic (ReFL only).
        train_conv_in (bool): Train the UNet ``conv_in`` as OSEDiff does.
        inference (dict | None): Test-time preset (``archs.sr_inference``): ``{preset: released}`` is
            ``RELEASED_INFERENCE``; validation/testing only.
    """
    # OSEDiff's test_osediff.py: one UNet step at t=999 (OSEDiff_test), the LQ latent drawn from the
    # VAE posterior (latent_dist.sample()), --align_method adain by default (choices wavelet|adain|nofix)
    RELEASED_INFERENCE = {'sampler': None, 'num_steps': 1, 'colour_fix': 'adain', 'vae_sample': True}

    def __init__(self, sd_path, osediff_path=None, scale=4, lora_rank_unet=4, lora_rank_vae=4, timestep=999,
                 prompt='', prompt_embeds_path=None, tagger=None, explore_sigma=0.0, train_conv_in=True,
                 inference=None):
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        check_folder(sd_path, {**model_layout('unet', 'vae'), 'scheduler': ('scheduler_config.json',)},
                     'Stable Diffusion base folder (network_g.sd_path)')
        self.scale = int(scale)
        self.explore_sigma = float(explore_sigma)
        self.stochastic = self.explore_sigma > 0
        self.unet = freeze(load_pretrained(UNet2DConditionModel, sd_path, 'unet', 'UNet'))
        self.vae = freeze(load_pretrained(AutoencoderKL, sd_path, 'vae', 'VAE'))
        scheduler = DDPMScheduler.from_pretrained(sd_path, subfolder='scheduler')
        self.prediction_type = scheduler.config.prediction_type
        self.timestep = int(timestep)
        self.register_buffer('alphas_cumprod', scheduler.alphas_cumprod.float(), persistent=False)
        self.prompt = PromptEmbedder(sd_path, prompt, prompt_embeds_path, tagger)
        ckpt = load_osediff_pkl(osediff_path) if osediff_path else None
        targets = osediff_lora_targets(self.unet, self.vae)
        if ckpt is not None:
            targets = {k: ckpt[k] for k in targets}
            lora_rank_unet, lora_rank_vae = ckpt['rank_unet'], ckpt['rank_vae']
        for adapter in UNET_ADAPTERS:
            add_lora(self.unet, lora_rank_unet, targets[f'unet_lora_{adapter.split("_")[1]}_modules'], adapter)
        self.unet.set_adapters(list(UNET_ADAPTERS))
        add_lora(self.vae, lora_rank_vae, targets['vae_lora_encoder_modules'], 'default_encoder')
        self.vae.set_adapter('default_encoder')
        for name, p in self.unet.named_parameters():
            p.requires_grad_('lora_' in name or (train_conv_in and 'conv_in' in name))
        for name, p in self.vae.named_parameters():
            p.requires_grad_('lora_' in name)
        if ckpt is not None:
            unet_names = [n for n, _ in self.unet.named_parameters() if 'lora' in n or 'conv_in' in n]
            copy_named(self.unet, ckpt['state_dict_unet'], unet_names, osediff_path, 'state_dict_unet')
            copy_named(self.vae, ckpt['state_dict_vae'], [n for n, _ in self.vae.named_parameters() if 'lora' in n],
                       osediff_path, 'state_dict_vae')
        self.multiple = latent_multiple(self.vae, self.unet)
        self.configure_inference(inference)

    def _x0(self, lq):
        """Predicted clean latent (B, 4, h, w) for the LQ batch."""
        z = vae_encode(self.vae, upscale_input(lq, self.scale, self.multiple), sample=self.vae_sample)
        t = torch.full((lq.size(0),), self.timestep, device=lq.device, dtype=torch.long)
        out = self.unet(z, t, encoder_hidden_states=self.prompt(lq)[0].to(z.dtype)).sample
        return split_prediction(out, z, self.alphas_cumprod[self.timestep], self.prediction_type)[0]

    def sample(self, lq, grad_steps=1):
        with self.autocast(), torch.set_grad_enabled(torch.is_grad_enabled() and grad_steps > 0):
            return vae_decode(self.vae, self._x0(lq))

    @torch.no_grad()
    def sample_trajectory(self, lq):
        from finpercep_basicsr.archs.generator_policy import Trajectory
        if not self.stochastic:
            raise UserInputError('FinPercepOSEDiffGenerator is deterministic: set network_g.explore_sigma > 0 '
                                 'for grpo/dpo')
        with self.autocast():
            mean = self._x0(lq).float()
            action = mean + self.explore_sigma * torch.randn_like(mean)
            sr = vae_decode(self.vae, action)
        return Trajectory(sr=sr, states=[mean], actions=[action], timesteps=[self.timestep],
                          log_probs=gaussian_log_prob(action, mean, self.explore_sigma)[:, None], cond={'lq': lq})

    def log_prob(self, trajectory):
        with self.autocast():
            mean = self._x0(trajectory.cond['lq'])  # recomputed: gradients reach the UNet and VAE-encoder LoRA
        return gaussian_log_prob(trajectory.actions[0], mean, self.explore_sigma)[:, None]
