"""Tiny StableSR inputs: an SD folder with a 3-level VAE (so CFW has a fusion level) and released checkpoints.

``write_released_checkpoints`` renames a generator's tensors into StableSR's released LDM layout
(``model.diffusion_model.*`` with ``spade`` inside ResBlocks, ``structcond_stage_model.*``,
``first_stage_model.*`` and the CFW VAE with ``decoder.fusion_layer_*``): the inverse of the
conversion, written independently of it so that the round trip checks both.
"""
import os
import re

import torch
from diffusion_fixture import make_sd_folder

from finpercep_basicsr.archs.stablesr_convert import spade_table

# tiny encoder/SPADE/CFW sizes (StableSR: model_channels 256, out_channels 256, hidden 128, ...)
ENCODER_OPT = {'model_channels': 8, 'channel_mult': [1, 2], 'num_res_blocks': 1, 'attention_levels': [1],
               'out_channels': 8, 'num_heads': 2, 'norm_groups': 8, 'spade_hidden': 8, 'num_fuse_block': 1,
               'num_grow_ch': 4}
RES = {'norm1': 'in_layers.0', 'conv1': 'in_layers.2', 'time_emb_proj': 'emb_layers.1', 'norm2': 'out_layers.0',
       'conv2': 'out_layers.3', 'conv_shortcut': 'skip_connection'}
VAE_ATTN = {'group_norm': 'norm', 'to_q': 'q', 'to_k': 'k', 'to_v': 'v', 'to_out.0': 'proj_out'}


def make_stablesr_sd(root, seed=0):
    from diffusers import AutoencoderKL
    sd = make_sd_folder(root, seed)
    torch.manual_seed(seed + 1)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16),
                  down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                  layers_per_block=1, norm_num_groups=8, sample_size=32).save_pretrained(os.path.join(sd, 'vae'))
    return sd


def _ldm_unet(name, per, has_attn):
    top = {'time_embedding.linear_1': 'time_embed.0', 'time_embedding.linear_2': 'time_embed.2',
           'conv_in': 'input_blocks.0.0', 'conv_norm_out': 'out.0', 'conv_out': 'out.2'}
    for k, v in top.items():
        if name.startswith(k + '.'):
            return v + name[len(k):]
    m = re.match(r'(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)', name)
    if m:
        kind, b, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if kind == 'down':
            idx = 1 + b * (per + 1) + (per if part == 'downsamplers' else j)
            block = f'input_blocks.{idx}'
        else:
            block = f'output_blocks.{b * (per + 1) + (per if part == "upsamplers" else j)}'
    else:
        m = re.match(r'mid_block\.(resnets|attentions)\.(\d+)\.(.*)', name)
        part, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if part == 'attentions':
            return f'middle_block.1.{rest}'
        block = f'middle_block.{2 * j}'
    if part == 'resnets':
        first = rest.split('.')[0]
        return f'{block}.{"" if block.startswith("middle") else "0."}{RES[first]}{rest[len(first):]}'
    if part == 'attentions':
        return f'{block}.1.{rest}'
    if part == 'downsamplers':
        return f'{block}.0.op.{rest[len("conv."):]}'
    return f'{block}.{2 if has_attn[b] else 1}.{rest}'  # upsampler after the resnet (and attention)


def _ldm_vae(name, value, n):
    m = re.match(r'(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0|upsamplers\.0)\.(.*)',
                 name)
    if m:
        side, kind, i, part, j, rest = m.groups()
        level = int(i) if kind == 'down' else n - 1 - int(i)
        rest = rest.replace('conv_shortcut', 'nin_shortcut')
        if part.startswith('resnets'):
            return f'{side}.{kind}.{level}.block.{j}.{rest}', value
        return f'{side}.{kind}.{level}.{"downsample" if kind == "down" else "upsample"}.{rest}', value
    m = re.match(r'(encoder|decoder)\.mid_block\.(resnets\.(\d)|attentions\.0)\.(.*)', name)
    if m:
        side, part, j, rest = m.groups()
        if j is not None:
            return f'{side}.mid.block_{int(j) + 1}.{rest.replace("conv_shortcut", "nin_shortcut")}', value
        for k, v in VAE_ATTN.items():
            if rest.startswith(k + '.'):
                value = value[..., None, None] if value.dim() == 2 else value  # LDM uses 1x1 convs
                return f'{side}.mid.attn_1.{v}{rest[len(k):]}', value
    return name.replace('conv_norm_out', 'norm_out'), value


def write_released_checkpoints(gen, root):
    """``root/stablesr.ckpt`` and ``root/vqgan_cfw.ckpt`` in StableSR's released layouts."""
    per = gen.unet.config.layers_per_block
    has_attn = ['CrossAttn' in t for t in gen.unet.config.up_block_types]
    spade_blocks = {v: k for k, v in spade_table(gen.unet.config).items()}
    main = {'betas': torch.zeros(3), 'cond_stage_model.model.token_embedding.weight': torch.zeros(2, 2)}
    for name, value in gen.unet.state_dict().items():
        main['model.diffusion_model.' + _ldm_unet(name, per, has_attn)] = value
    for name, value in gen.state_dict().items():
        head, key, rest = (name.split('.', 2) + [''])[:3]
        if head == 'spade':
            main[f'model.diffusion_model.{spade_blocks[key]}.spade.{rest}'] = value
        elif head == 'structcond':
            main[f'structcond_stage_model.{key}.{rest}'] = value
    n = len(gen.vae.config.block_out_channels)
    cfw = {'loss.discriminator.main.0.weight': torch.zeros(1)}
    for name, value in gen.vae.state_dict().items():
        key, value = _ldm_vae(name, value, n)
        cfw[key] = main['first_stage_model.' + key] = value
    for name, value in gen.cfw.state_dict().items():
        cfw[f'decoder.{name}'] = value
    torch.save({'state_dict': main}, os.path.join(root, 'stablesr.ckpt'))
    torch.save({'state_dict': cfw}, os.path.join(root, 'vqgan_cfw.ckpt'))
    return os.path.join(root, 'stablesr.ckpt'), os.path.join(root, 'vqgan_cfw.ckpt')
