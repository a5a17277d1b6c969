"""A tuned StableSR policy back in StableSR's released LDM checkpoint layout (inverse of ``stablesr_convert``).

Writes what StableSR's own sampling scripts load:
- the main checkpoint ``{'state_dict': ...}`` with ``model.diffusion_model.*`` (the UNet in LDM names,
  UNet LoRA merged in, each ResBlock's ``spade.*`` inside it), ``structcond_stage_model.*`` and
  ``first_stage_model.*`` (the VAE);
- the CFW VAE checkpoint ``{'state_dict': ...}`` (LDM VAE names plus ``decoder.fusion_layer_<i>.*``).

Name rules (diffusers -> LDM), for UNets with ``L = layers_per_block``:
``down_blocks.b.resnets.j`` -> ``input_blocks.<1+b(L+1)+j>.0`` (``downsamplers.0.conv`` ->
``input_blocks.<1+b(L+1)+L>.0.op``), ``attentions.j`` -> ``....1``; ``up_blocks.b.resnets.j`` ->
``output_blocks.<b(L+1)+j>.0``, upsamplers after the resnet (and attention); ``mid_block`` ->
``middle_block.{0,1,2}``; ResBlock parts ``norm1 conv1 time_emb_proj norm2 conv2 conv_shortcut`` ->
``in_layers.0 in_layers.2 emb_layers.1 out_layers.0 out_layers.3 skip_connection``. VAE levels
count from the input for the encoder and from the latent for the diffusers decoder (reversed in
LDM), ``conv_shortcut`` -> ``nin_shortcut``, mid attention 1x1 convs.
"""
import re

from finpercep_basicsr.convert.stablesr_convert import spade_table

RES = {'norm1': 'in_layers.0', 'conv1': 'in_layers.2', 'time_emb_proj': 'emb_layers.1', 'norm2': 'out_layers.0',
       'conv2': 'out_layers.3', 'conv_shortcut': 'skip_connection'}
VAE_ATTN = {'group_norm': 'norm', 'to_q': 'q', 'to_k': 'k', 'to_v': 'v', 'to_out.0': 'proj_out'}
UNET_TOP = {'time_embedding.linear_1': 'time_embed.0', 'time_embedding.linear_2': 'time_embed.2',
            'conv_in': 'input_blocks.0.0', 'conv_norm_out': 'out.0', 'conv_out': 'out.2'}


def ldm_unet_key(name, per, has_attn):
    """LDM name of a diffusers UNet tensor; ``has_attn[b]``: up block b has attentions."""
    for k, v in UNET_TOP.items():
        if name.startswith(k + '.'):
            return v + name[len(k):]
    m = re.match(r'(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)', name)
    if m:
        kind, b, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if kind == 'down':
            block = f'input_blocks.{1 + b * (per + 1) + (per if part == "downsamplers" else j)}'
        else:
            block = f'output_blocks.{b * (per + 1) + (per if part == "upsamplers" else j)}'
    else:
        m = re.match(r'mid_block\.(resnets|attentions)\.(\d+)\.(.*)', name)
        if m is None:
            raise KeyError(f'no LDM name for UNet tensor {name}')
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
    return f'{block}.{2 if has_attn[b] else 1}.{rest}'


def ldm_vae_item(name, value, n_levels):
    """(LDM name, tensor) of a diffusers VAE tensor (mid attention linears become 1x1 convs)."""
    m = re.match(r'(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0|upsamplers\.0)\.(.*)',
                 name)
    if m:
        side, kind, i, part, j, rest = m.groups()
        level = int(i) if kind == 'down' else n_levels - 1 - int(i)
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
                value = value[..., None, None] if value.dim() == 2 else value
                return f'{side}.mid.attn_1.{v}{rest[len(k):]}', value
    return name.replace('conv_norm_out', 'norm_out'), value


def released_state_dicts(unet, vae, extras):
    """The main and CFW state dicts of StableSR's release.

    Args:
        unet: plain diffusers UNet (LoRA already merged). vae: plain diffusers VAE.
        extras (dict): ``structcond.*``, ``spade.*``, ``cfw.*`` tensors (the policy's own names).

    Returns:
        tuple[dict, dict]: ``(main, cfw)`` flat state dicts (CPU tensors).
    """
    per = unet.config.layers_per_block
    has_attn = ['CrossAttn' in t for t in unet.config.up_block_types]
    spade_blocks = {v: k for k, v in spade_table(unet.config).items()}
    main, cfw = {}, {}
    for name, value in unet.state_dict().items():
        main['model.diffusion_model.' + ldm_unet_key(name, per, has_attn)] = value
    for name, value in extras.items():
        head, key, rest = (name.split('.', 2) + [''])[:3]
        if head == 'spade':
            main[f'model.diffusion_model.{spade_blocks[key]}.spade.{rest}'] = value
        elif head == 'structcond':
            main[f'structcond_stage_model.{key}.{rest}'] = value
        elif head == 'cfw':
            cfw[f'decoder.{key}.{rest}'] = value
    n_levels = len(vae.config.block_out_channels)
    for name, value in vae.state_dict().items():
        key, value = ldm_vae_item(name, value, n_levels)
        cfw[key] = main['first_stage_model.' + key] = value
    return ({k: v.detach().cpu().contiguous() for k, v in main.items()},
            {k: v.detach().cpu().contiguous() for k, v in cfw.items()})


def save_released(unet, vae, extras, main_path, cfw_path):
    """``torch.save({'state_dict': ...})`` of ``released_state_dicts`` to the two paths."""
    from finpercep_basicsr.utils.checkpoint import atomic_torch_save
    main, cfw = released_state_dicts(unet, vae, extras)
    atomic_torch_save({'state_dict': main}, main_path)
    atomic_torch_save({'state_dict': cfw}, cfw_path)
