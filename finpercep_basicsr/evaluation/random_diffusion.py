"""Diffusers model folders with random weights at real layer sizes, for the benchmarks (nothing is downloaded).

Values do not change memory or time, so a benchmark of Stable Diffusion 2.1's UNet and VAE needs
only their configs (``PRESETS``): ``sd21`` has SD 2.1 base's UNet and VAE sizes, ``small`` a
CPU-sized UNet (32-64-128 channels) and VAE, ``tiny`` the test models' sizes. The prompt is a fixed
random embedding file (no text encoder).
"""
import contextlib
import os
import tempfile

PRESETS = {  # (UNet kwargs, VAE kwargs, text dim)
    'tiny': ({'block_out_channels': (8, 16), 'layers_per_block': 1, 'attention_head_dim': 4, 'norm_num_groups': 8,
              'down_block_types': ('CrossAttnDownBlock2D', 'DownBlock2D'),
              'up_block_types': ('UpBlock2D', 'CrossAttnUpBlock2D')},
             {'block_out_channels': (8, 16), 'layers_per_block': 1, 'norm_num_groups': 8}, 16),
    'small': ({'block_out_channels': (32, 64, 128), 'layers_per_block': 1, 'attention_head_dim': 8,
               'norm_num_groups': 32, 'down_block_types': ('CrossAttnDownBlock2D',) * 2 + ('DownBlock2D',),
               'up_block_types': ('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 2},
              {'block_out_channels': (32, 64, 128), 'layers_per_block': 1, 'norm_num_groups': 32}, 64),
    'sd21': ({'block_out_channels': (320, 640, 1280, 1280), 'layers_per_block': 2,
              'attention_head_dim': (5, 10, 20, 20), 'use_linear_projection': True,
              'down_block_types': ('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',),
              'up_block_types': ('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3},
             {'block_out_channels': (128, 256, 512, 512), 'layers_per_block': 2}, 1024),
}
PROMPT_FILE = 'prompt_embeds.safetensors'


def random_sd_folder(root, preset, seesr=False):
    """A diffusers SD folder (``unet/``, ``vae/``, ``scheduler/``) with random weights, and a prompt-embedding file.

    Args:
        root (str): Folder to write.
        preset (str): A key of ``PRESETS``.
        seesr (bool): Also write ``root/seesr/{unet,controlnet}`` in the layout of SeeSR's released
            folders: the ControlNet copies the UNet's encoder (its conditioning embedding downsamples the
            image by the VAE's factor), and both carry SeeSR's image cross-attention (``image_attentions``
            with a 512-d context, ``use_image_cross_attention: true`` in their configs), so their weights
            count in memory. Without a tagger SeeSR needs ``allow_no_tagger`` and skips that attention.

    Returns:
        tuple[str, str, str | None]: The SD folder, the ``prompt_embeds`` file, and the SeeSR folder (or None).
    """
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    unet_kw, vae_kw, text_dim = PRESETS[preset]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, cross_attention_dim=text_dim, **unet_kw)
    unet.save_pretrained(os.path.join(root, 'unet'))
    n = len(vae_kw['block_out_channels'])
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=('DownEncoderBlock2D',) * n,
                  up_block_types=('UpDecoderBlock2D',) * n, **vae_kw).save_pretrained(os.path.join(root, 'vae'))
    DDPMScheduler(num_train_timesteps=1000, beta_schedule='scaled_linear', beta_start=0.00085,
                  beta_end=0.012).save_pretrained(os.path.join(root, 'scheduler'))
    embeds = os.path.join(root, PROMPT_FILE)
    save_file({'prompt_embeds': torch.randn(1, 77, text_dim)}, embeds)
    seesr_path = None
    if seesr:
        seesr_path = os.path.join(root, 'seesr')
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)[:n])
        for name, model in (('unet', unet), ('controlnet', controlnet)):
            save_seesr_part(model, os.path.join(seesr_path, name))
    return root, embeds, seesr_path


def save_seesr_part(model, folder):
    """Save ``model`` with SeeSR's image cross-attention added and flagged in its config."""
    import json

    from finpercep_basicsr.archs.seesr_arch import _Context, add_image_attentions
    add_image_attentions(model, _Context())
    model.save_pretrained(folder)
    path = os.path.join(folder, 'config.json')
    with open(path) as f:
        config = json.load(f)
    config['use_image_cross_attention'] = True
    with open(path, 'w') as f:
        json.dump(config, f)


@contextlib.contextmanager
def random_sd(preset, seesr=False):
    """``random_sd_folder`` in a temporary folder that is removed afterwards; yields its return value."""
    with tempfile.TemporaryDirectory(prefix='random_sd_') as root:
        yield random_sd_folder(root, preset, seesr)
