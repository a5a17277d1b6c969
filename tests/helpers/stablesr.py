"""Tiny StableSR inputs: an SD folder with a 3-level VAE (so CFW has a fusion level) and released checkpoints.

``write_released_checkpoints`` renames a generator's tensors into StableSR's released LDM layout
(``model.diffusion_model.*`` with ``spade`` inside ResBlocks, ``structcond_stage_model.*``,
``first_stage_model.*`` and the CFW VAE with ``decoder.fusion_layer_*``) with the exporter
(``archs/stablesr_export.py``); the conversion reads them with diffusers' own LDM converters, so
the round trip checks the exporter's names against diffusers'.
"""
import os

import torch
from tests.helpers.diffusion import make_sd_folder

from finpercep_basicsr.convert.stablesr_export import released_state_dicts

# tiny encoder/SPADE/CFW sizes (StableSR: model_channels 256, out_channels 256, hidden 128, ...)
ENCODER_OPT = {'model_channels': 8, 'channel_mult': [1, 2], 'num_res_blocks': 1, 'attention_levels': [1],
               'out_channels': 8, 'num_heads': 2, 'norm_groups': 8, 'spade_hidden': 8, 'num_fuse_block': 1,
               'num_grow_ch': 4}


def make_stablesr_sd(root, seed=0):
    from diffusers import AutoencoderKL
    sd = make_sd_folder(root, seed)
    torch.manual_seed(seed + 1)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16),
                  down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                  layers_per_block=1, norm_num_groups=8, sample_size=32).save_pretrained(os.path.join(sd, 'vae'))
    return sd


def write_released_checkpoints(gen, root):
    """``root/stablesr.ckpt`` and ``root/vqgan_cfw.ckpt`` in StableSR's released layouts, with the
    entries the conversion must ignore (schedule buffers, text encoder, discriminator)."""
    extras = {k: v for k, v in gen.state_dict().items() if k.split('.')[0] in ('structcond', 'spade', 'cfw')}
    main, cfw = released_state_dicts(gen.unet, gen.vae, extras)
    main.update({'betas': torch.zeros(3), 'cond_stage_model.model.token_embedding.weight': torch.zeros(2, 2)})
    cfw['loss.discriminator.main.0.weight'] = torch.zeros(1)
    torch.save({'state_dict': main}, os.path.join(root, 'stablesr.ckpt'))
    torch.save({'state_dict': cfw}, os.path.join(root, 'vqgan_cfw.ckpt'))
    return os.path.join(root, 'stablesr.ckpt'), os.path.join(root, 'vqgan_cfw.ckpt')
