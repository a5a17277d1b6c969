"""Export RLHF-tuned diffusion policies in the formats the original projects' inference scripts load.

The policy is built from the training option file's ``network_g`` (the same base weights as in
training), the checkpoint's trainable tensors are loaded into it, then written as (``FORMATS``):

- ``osediff_pkl`` (OSEDiff): one torch file in the layout of OSEDiff's released ``osediff.pkl``
  (``rank_unet``, ``rank_vae``, ``unet_lora_{encoder,decoder,others}_modules``,
  ``vae_lora_encoder_modules``, ``state_dict_unet`` = every UNet tensor named ``*lora*`` or
  ``*conv_in*``, ``state_dict_vae`` = every VAE ``*lora*`` tensor), for ``test_osediff.py --osediff_path``.
- ``diffusers_lora`` (SeeSR, or any policy with a UNet adapter ``default``): the UNet LoRA as
  ``PATH/pytorch_lora_weights.safetensors`` in diffusers' pipeline format (``unet.``-prefixed peft
  keys with the LoRA config in the metadata; ``pipe.load_lora_weights(PATH)``), and a ControlNet
  adapter as ``PATH/controlnet/pytorch_lora_weights.safetensors`` (``controlnet.load_lora_adapter``).
  The LoRA scale alpha / r is folded into ``lora_B``, so loaders that ignore the metadata agree.
- ``stablesr_ckpt`` (StableSR): ``PATH/stablesr.ckpt`` and ``PATH/vqgan_cfw.ckpt`` in StableSR's
  released LDM layout (UNet LoRA merged in; ``convert/stablesr_export.py``), for its ``--ckpt`` and
  ``--vqgan_ckpt``.
- ``merged`` (all): full weights with every adapter merged, in the folder the policy reads: a
  diffusers SD folder for OSEDiff (``sd_path``, no ``osediff_path``), a SeeSR folder (``unet/``,
  ``controlnet/``), a converted StableSR folder (``stablesr_path``).
"""
import json
import os
import shutil
from copy import deepcopy

from finpercep_basicsr.utils.errors import UserInputError

LORA_FILE = 'pytorch_lora_weights.safetensors'


def merged_copy(model):
    """A plain diffusers model (no peft layers) with every active adapter merged into its weights."""
    model = deepcopy(model).float()
    if getattr(model, 'peft_config', None):
        model.fuse_lora(lora_scale=1.0)
        model.unload_lora()
    return model


def folded_copy(model, adapter='default'):
    """An fp32 copy of ``model`` whose LoRA scale alpha / r is folded into ``lora_B`` (alpha set to r).

    Loaders that do not read the LoRA config from the file's metadata take alpha = r; with the
    scale folded in, every loader computes the same update.
    """
    import torch
    from peft.tuners.lora import LoraLayer
    model = deepcopy(model).float()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_B:
                module.lora_B[adapter].weight.mul_(module.scaling[adapter])
                module.scaling[adapter] = 1.0
    model.peft_config[adapter].lora_alpha = model.peft_config[adapter].r
    return model


def formats_for(policy):
    """The export formats that fit ``policy``, its own project's first."""
    name = type(policy).__name__
    own = {'FinPercepOSEDiffGenerator': ['osediff_pkl'], 'FinPercepStableSRGenerator': ['stablesr_ckpt']}.get(name, [])
    lora = ['diffusers_lora'] if 'default' in getattr(policy.unet, 'peft_config', {}) else []
    return own + lora + ['merged']


def _check_type(policy, fmt, cls_name):
    if type(policy).__name__ != cls_name:
        raise UserInputError(f'--format {fmt} is for {cls_name}; network_g is {type(policy).__name__} '
                             f'(choose among: {", ".join(formats_for(policy))})')


def _extras(policy):
    """StableSR's own modules (time-aware encoder, SPADE, CFW), saved beside the merged UNet and VAE."""
    return {k: v for k, v in policy.state_dict().items() if k.split('.')[0] in ('structcond', 'spade', 'cfw')}


def export_osediff_pkl(policy, out, network_opt):
    from finpercep_basicsr.archs.osediff_arch import UNET_ADAPTERS
    from finpercep_basicsr.utils.checkpoint import atomic_torch_save
    _check_type(policy, 'osediff_pkl', 'FinPercepOSEDiffGenerator')
    configs = {name: policy.unet.peft_config[name] for name in UNET_ADAPTERS}
    vae_config = policy.vae.peft_config['default_encoder']
    ranks = {c.r for c in configs.values()}
    if len(ranks) != 1 or any(c.lora_alpha != 8 for c in list(configs.values()) + [vae_config]):
        raise UserInputError('osediff.pkl holds one UNet rank and no lora_alpha (OSEDiff uses peft\'s default 8): '
                             'this policy\'s adapters do not fit it')
    ckpt = {'rank_unet': ranks.pop(), 'rank_vae': vae_config.r,
            'vae_lora_encoder_modules': sorted(vae_config.target_modules)}
    for name, config in configs.items():
        ckpt[f'unet_lora_{name.split("_")[1]}_modules'] = sorted(config.target_modules)
    ckpt['state_dict_unet'] = {n: p.detach().float().cpu() for n, p in policy.unet.named_parameters()
                               if 'lora' in n or 'conv_in' in n}
    ckpt['state_dict_vae'] = {n: p.detach().float().cpu() for n, p in policy.vae.named_parameters() if 'lora' in n}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_torch_save(ckpt, out)
    return [out]


def export_diffusers_lora(policy, out, network_opt):
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict
    if 'diffusers_lora' not in formats_for(policy):
        raise UserInputError(f'--format diffusers_lora needs a UNet LoRA adapter named "default"; '
                             f'{type(policy).__name__} has none here (choose among: {", ".join(formats_for(policy))})')
    unet = folded_copy(policy.unet)
    layers = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(unet, adapter_name='default').items()}
    StableDiffusionLoraLoaderMixin.save_lora_weights(out, unet_lora_layers=layers, weight_name=LORA_FILE,
                                                     unet_lora_adapter_metadata=unet.peft_config['default'].to_dict())
    written = [os.path.join(out, LORA_FILE)]
    controlnet = getattr(policy, 'controlnet', None)
    if controlnet is not None and 'default' in getattr(controlnet, 'peft_config', {}):
        folded_copy(controlnet).save_lora_adapter(os.path.join(out, 'controlnet'), weight_name=LORA_FILE)
        written.append(os.path.join(out, 'controlnet', LORA_FILE))
    return written


def export_stablesr_ckpt(policy, out, network_opt):
    from finpercep_basicsr.convert.stablesr_export import save_released
    _check_type(policy, 'stablesr_ckpt', 'FinPercepStableSRGenerator')
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, 'stablesr.ckpt'), os.path.join(out, 'vqgan_cfw.ckpt')]
    save_released(merged_copy(policy.unet), merged_copy(policy.vae), _extras(policy), *paths)
    return paths


def _save_model(model, folder, flag_from=None):
    merged_copy(model).save_pretrained(folder)
    if flag_from is not None:  # SeeSR's image cross-attention flag is not a diffusers config key
        with open(os.path.join(flag_from, 'config.json')) as f:
            source = json.load(f)
        with open(os.path.join(folder, 'config.json')) as f:
            config = json.load(f)
        for key in ('use_image_cross_attention', 'image_cross_attention_dim'):
            if key in source:
                config[key] = source[key]
        with open(os.path.join(folder, 'config.json'), 'w') as f:
            json.dump(config, f, indent=2)


def export_merged(policy, out, network_opt):
    from safetensors.torch import save_file

    from finpercep_basicsr.archs.stablesr_arch import CONFIG_FILE, EXTRA_FILE
    name = type(policy).__name__
    os.makedirs(out, exist_ok=True)
    if name == 'FinPercepOSEDiffGenerator':  # a complete SD folder: the base's other parts copied beside
        for sub in os.listdir(network_opt['sd_path']):
            src = os.path.join(network_opt['sd_path'], sub)
            if sub not in ('unet', 'vae') and os.path.isdir(src):
                shutil.copytree(src, os.path.join(out, sub), dirs_exist_ok=True)
        _save_model(policy.unet, os.path.join(out, 'unet'))
        _save_model(policy.vae, os.path.join(out, 'vae'))
    elif name == 'FinPercepSeeSRGenerator':
        for part in ('unet', 'controlnet'):
            _save_model(getattr(policy, part), os.path.join(out, part),
                        flag_from=os.path.join(network_opt['seesr_path'], part))
    elif name == 'FinPercepStableSRGenerator':
        _save_model(policy.unet, os.path.join(out, 'unet'))
        _save_model(policy.vae, os.path.join(out, 'vae'))
        save_file({k: v.detach().float().cpu().contiguous() for k, v in _extras(policy).items()},
                  os.path.join(out, EXTRA_FILE))
        with open(os.path.join(out, CONFIG_FILE), 'w') as f:
            json.dump(policy.config, f, indent=1)
    else:
        raise UserInputError(f'--format merged: {name} is not a diffusion policy (its net_g checkpoint is already '
                             f'full weights)')
    return [out]


FORMATS = {'osediff_pkl': export_osediff_pkl, 'diffusers_lora': export_diffusers_lora,
           'stablesr_ckpt': export_stablesr_ckpt, 'merged': export_merged}
"""``--format`` name -> writer ``(policy, out, network_opt) -> written paths``."""


def export_policy(opt_path, weights, fmt, out, param_key=None):
    """Build ``opt_path``'s policy, load the RLHF checkpoint ``weights`` strictly and write it as ``fmt``.

    Args:
        opt_path (str): The training option file (its ``network_g`` builds the policy; relative model
            paths are relative to the working folder, as in training).
        weights (str): ``net_g_<iter>.pth`` of the RLHF run.
        fmt (str): A key of ``FORMATS``.
        out (str): Output file (``osediff_pkl``) or folder (the others).
        param_key (str | None): ``params`` or ``params_ema`` (default: ``params_ema`` if present).

    Returns:
        tuple[list[str], str]: The written paths and the checkpoint key that was loaded.

    Raises:
        UserInputError: No diffusion ``network_g``, a checkpoint that does not fit it, or a format
            that does not fit the policy.
    """
    import torch

    import finpercep_basicsr.archs  # noqa: F401  (registers the policies)
    from finpercep_basicsr.archs.generator_policy import build_policy
    from finpercep_basicsr.utils.checkpoint import load_state_dict_into
    from finpercep_basicsr.utils.network_options import network_section
    from finpercep_basicsr.utils.option_check import load_option_file
    opt = load_option_file(opt_path)
    network_opt = network_section(opt, 'network_g', opt_path)
    for key in ('sd_path', 'seesr_path', 'stablesr_path', 'osediff_path'):
        if network_opt.get(key):  # relative paths are relative to the working folder, as in training
            network_opt[key] = os.path.abspath(os.path.expanduser(str(network_opt[key])))
    policy = build_policy(network_opt, opt.get('scale', 4))
    if not hasattr(policy, 'unet'):
        raise UserInputError(f'{opt_path}: network_g.type {network_opt.get("type")} is not a diffusion policy; its '
                             f'net_g checkpoint already is the full network')
    with torch.no_grad():
        key = load_state_dict_into(policy.weights_module(), weights, param_key, strict=True,
                                   what='generator checkpoint (--weights)')
    return FORMATS[fmt](policy, out, network_opt), key
