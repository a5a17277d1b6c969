"""Convert StableSR's released LDM checkpoints into the folder ``FinPercepStableSRGenerator`` loads.

Inputs (read with ``weights_only=True``, or safetensors):
- the StableSR checkpoint (e.g. ``stablesr_000117.ckpt``; a ``state_dict`` entry or a flat dict);
- the CFW VAE checkpoint ``vqgan_cfw_00011.ckpt`` (LDM VAE keys plus ``decoder.fusion_layer_*``);
- a diffusers SD 2.1 base folder whose ``unet/`` and ``vae/`` configs describe the architecture.

Key table (released -> ours):

==============================================  ======================================================
``model.diffusion_model.*`` (no ``spade``)      ``unet/`` via diffusers' ``convert_ldm_unet_checkpoint``
``model.diffusion_model.<block>.spade.*``       ``spade.<diffusers resnet path, dots as _>.*``, with
                                                ``input_blocks.<1+b(L+1)+j>.0`` -> ``down_blocks_b_resnets_j``,
                                                ``middle_block.{0,2}`` -> ``mid_block_resnets_{0,1}``,
                                                ``output_blocks.<b(L+1)+j>.0`` -> ``up_blocks_b_resnets_j``
                                                (L = ``layers_per_block``)
``structcond_stage_model.*``                    ``structcond.*`` (same names, ``TimeAwareEncoder``)
CFW ``[first_stage_model.]decoder.fusion_layer_<i>.*``  ``cfw.fusion_layer_<i>.*`` (same inner names)
CFW VAE (other keys), else ``first_stage_model.*``  ``vae/`` via ``convert_ldm_vae_checkpoint``
``cond_stage_model.*``, ``model_ema.*``, ``loss.*``,  ignored (the text encoder comes from the SD folder;
schedule buffers (``betas``, ``alphas_cumprod``...)  the schedule from its ``scheduler/``)
==============================================  ======================================================

Any other key, and any tensor the models do not take, is an error listing the keys.
Output: ``<out>/unet/``, ``<out>/vae/`` (diffusers), ``<out>/stablesr.safetensors`` and
``<out>/stablesr_config.json`` (encoder/SPADE/CFW sizes read off the tensor shapes).
"""
import json
import os
import re

from finpercep_basicsr.archs.latent_diffusion import load_safetensors
from finpercep_basicsr.archs.stablesr_arch import CONFIG_FILE, EXTRA_FILE
from finpercep_basicsr.utils.checkpoint import load_checkpoint
from finpercep_basicsr.utils.errors import UserInputError

UNET, STRUCT, VAE = 'model.diffusion_model.', 'structcond_stage_model.', 'first_stage_model.'
IGNORED = ('cond_stage_model.', 'model_ema.', 'loss.')


def read_state(path, what):
    """A released checkpoint's flat state dict (safetensors, or torch with ``weights_only=True``)."""
    if str(path).endswith('.safetensors'):
        return load_safetensors(path, what)
    try:
        ckpt = load_checkpoint(path, what)
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from err
    except UserInputError as err:
        raise UserInputError(f'{err}\n{what} is read with weights_only=True (tensors only, no pickled code); '
                             f'extract its "state_dict" into a safetensors file if it holds other objects') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserInputError(f'{path}: expected a state dict (or a dict with "state_dict")')
    return state


def spade_table(unet_config):
    """LDM block prefix -> our SPADE key for every ResNet block of a UNet with ``unet_config``."""
    n_blocks, per = len(unet_config['block_out_channels']), int(unet_config['layers_per_block'])
    table = {'middle_block.0': 'mid_block_resnets_0', 'middle_block.2': 'mid_block_resnets_1'}
    for b in range(n_blocks):
        for j in range(per):
            table[f'input_blocks.{1 + b * (per + 1) + j}.0'] = f'down_blocks_{b}_resnets_{j}'
        for j in range(per + 1):
            table[f'output_blocks.{b * (per + 1) + j}.0'] = f'up_blocks_{b}_resnets_{j}'
    return table


def infer_config(extras):
    """Encoder/SPADE/CFW sizes (``stablesr_config`` keys) from the converted tensors' shapes."""
    def shape(key):
        return extras[key].shape
    n_levels = len([k for k in extras if re.fullmatch(r'structcond\.fea_tran\.\d+\.in_layers\.0\.weight', k)])
    base = shape('structcond.input_blocks.0.0.weight')[0]
    n_inputs = len({k.split('.')[2] for k in extras if k.startswith('structcond.input_blocks.')})
    per = (n_inputs - 1 - (n_levels - 1)) // n_levels
    attention = sorted({lvl for lvl in range(n_levels) for j in range(per)
                        if f'structcond.input_blocks.{1 + lvl * (per + 1) + j}.1.qkv.weight' in extras})
    spade = next(k for k in extras if k.endswith('mlp_shared.0.weight'))
    fusion = [k.split('.') for k in extras if k.startswith('cfw.') and k.endswith('.rdb1.conv1.weight')]
    blocks = {parts[3] for parts in fusion if parts[1] == fusion[0][1]} if fusion else ()
    return {'model_channels': base, 'num_res_blocks': per, 'attention_levels': attention,
            'channel_mult': [shape(f'structcond.fea_tran.{i}.in_layers.0.weight')[0] // base for i in range(n_levels)],
            'out_channels': shape('structcond.fea_tran.0.out_layers.3.weight')[0], 'spade_hidden': shape(spade)[0],
            'num_fuse_block': len(blocks) or 2,
            'num_grow_ch': shape('.'.join(fusion[0]))[0] if fusion else 32}


def _load_strict(cls, config, state, what):
    model = cls.from_config(config)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserInputError(f'{what}: converted tensors do not fit the SD base config: missing {missing[:10]}, '
                             f'unexpected {unexpected[:10]}')
    model.load_state_dict({k: v.reshape(own[k].shape) for k, v in state.items()})
    return model


def convert_stablesr(ckpt_path, cfw_path, sd_path, out_dir, num_heads=4, norm_groups=32):
    """Write the converted folder; returns the ``stablesr_config`` dict.

    Args:
        ckpt_path (str): StableSR LDM checkpoint. cfw_path (str): CFW VAE checkpoint.
        sd_path (str): diffusers SD base folder (``unet/config.json``, ``vae/config.json``).
        out_dir (str): Output folder (``network_g.stablesr_path``).
        num_heads (int), norm_groups (int): Encoder settings the tensors do not reveal.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from safetensors.torch import save_file
    configs = {}
    for sub in ('unet', 'vae'):
        path = os.path.join(str(sd_path), sub, 'config.json')
        if not os.path.isfile(path):
            raise UserInputError(f'SD base folder {sd_path}: missing {sub}/config.json')
        with open(path) as f:
            configs[sub] = json.load(f)
    main, cfw = read_state(ckpt_path, 'StableSR checkpoint'), read_state(cfw_path, 'CFW VAE checkpoint')
    table, extras, unet_ldm, vae_ldm, unknown = spade_table(configs['unet']), {}, {}, {}, []
    for key, value in main.items():
        if key.startswith(UNET) and '.spade.' in key:
            block, rest = key[len(UNET):].split('.spade.')
            if block not in table:
                unknown.append(key)
            else:
                extras[f'spade.{table[block]}.{rest}'] = value
        elif key.startswith(UNET):
            unet_ldm[key] = value
        elif key.startswith(STRUCT):
            extras['structcond.' + key[len(STRUCT):]] = value
        elif key.startswith(VAE + 'decoder.fusion_layer_'):
            extras['cfw.' + key[len(VAE + 'decoder.'):]] = value
        elif key.startswith(VAE):
            vae_ldm.setdefault('main', {})[key[len(VAE):]] = value
        elif not key.startswith(IGNORED) and '.' in key:
            unknown.append(key)
    for key, value in cfw.items():
        bare = key[len(VAE):] if key.startswith(VAE) else key
        if bare.startswith('decoder.fusion_layer_'):
            extras['cfw.' + bare[len('decoder.'):]] = value
        elif bare.startswith(('encoder.', 'decoder.', 'quant_conv.', 'post_quant_conv.')):
            vae_ldm.setdefault('cfw', {})[bare] = value
        elif not bare.startswith(IGNORED) and '.' in bare:
            unknown.append(f'{cfw_path}: {key}')
    if unknown:
        raise UserInputError(f'{len(unknown)} keys not in the StableSR key table: ' + ', '.join(unknown[:20]))
    for part, source in (('structcond.', STRUCT), ('spade.', 'model.diffusion_model.*.spade'),
                         ('cfw.', 'decoder.fusion_layer_* (vqgan_cfw_00011.ckpt)')):
        if not any(k.startswith(part) for k in extras):
            raise UserInputError(f'no {source} tensors found in {ckpt_path} / {cfw_path}')
    if not unet_ldm:
        raise UserInputError(f'{ckpt_path}: no {UNET}* tensors')
    vae_state = vae_ldm.get('cfw') or vae_ldm.get('main')
    if not vae_state:
        raise UserInputError(f'no VAE tensors in {cfw_path} or {ckpt_path}')
    unet = _load_strict(UNet2DConditionModel, configs['unet'], convert_ldm_unet_checkpoint(unet_ldm, configs['unet']),
                        f'UNet of {ckpt_path}')
    vae = _load_strict(AutoencoderKL, configs['vae'], convert_ldm_vae_checkpoint(vae_state, configs['vae']),
                       f'VAE of {cfw_path}')
    os.makedirs(out_dir, exist_ok=True)
    unet.save_pretrained(os.path.join(out_dir, 'unet'))
    vae.save_pretrained(os.path.join(out_dir, 'vae'))
    config = dict(infer_config(extras), num_heads=int(num_heads), norm_groups=int(norm_groups))
    save_file({k: v.contiguous() for k, v in extras.items()}, os.path.join(out_dir, EXTRA_FILE))
    with open(os.path.join(out_dir, CONFIG_FILE), 'w') as f:
        json.dump(config, f, indent=1)
    return config

