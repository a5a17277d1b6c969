"""Tiny random diffusers/transformers models saved in the released folder layouts (offline)."""
import json
import os

import torch

TEXT_DIM = 16
MAX_TOKENS = 8


def write_tokenizer(folder):
    """A CLIP BPE tokenizer with byte-level vocabulary and no merges (enough to tokenise any text)."""
    os.makedirs(folder, exist_ok=True)
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the others to 256 + n
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(len(extra))]
    vocab = {c: i for i, c in enumerate(chars + [c + '</w>' for c in chars] + ['<|startoftext|>', '<|endoftext|>'])}
    with open(os.path.join(folder, 'vocab.json'), 'w') as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, 'merges.txt'), 'w') as f:
        f.write('#version: 0.2\n')
    with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
        json.dump({'model_max_length': MAX_TOKENS, 'tokenizer_class': 'CLIPTokenizer'}, f)
    return len(vocab)


def tiny_unet(cross_dim=TEXT_DIM):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                                up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), cross_attention_dim=cross_dim,
                                attention_head_dim=4, norm_num_groups=8)


def tiny_vae():
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=32)


def make_sd_folder(root, seed=0):
    """``root/{unet,vae,text_encoder,tokenizer,scheduler}`` like a diffusers SD 2.1 base folder."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    vocab = write_tokenizer(os.path.join(root, 'tokenizer'))
    tiny_unet().save_pretrained(os.path.join(root, 'unet'))
    tiny_vae().save_pretrained(os.path.join(root, 'vae'))
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=MAX_TOKENS, bos_token_id=vocab - 2,
                            eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    CLIPTextModel(config).save_pretrained(os.path.join(root, 'text_encoder'))
    DDPMScheduler(num_train_timesteps=1000, beta_schedule='scaled_linear', beta_start=0.00085,
                  beta_end=0.012).save_pretrained(os.path.join(root, 'scheduler'))
    return str(root)


def make_seesr_folder(root, seed=0, image_attention=True):
    """``root/{unet,controlnet}`` in SeeSR's released layout (image cross-attention included)."""
    from diffusers import ControlNetModel

    from finpercep_basicsr.evaluation.random_diffusion import save_seesr_part
    torch.manual_seed(seed)
    unet = tiny_unet()
    controlnet = ControlNetModel(in_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                                 down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'), cross_attention_dim=TEXT_DIM,
                                 attention_head_dim=4, norm_num_groups=8, conditioning_embedding_out_channels=(8, 16))
    for name, model in (('unet', unet), ('controlnet', controlnet)):
        if image_attention:
            save_seesr_part(model, os.path.join(root, name))
        else:
            model.save_pretrained(os.path.join(root, name))
    return str(root)


def tiny_diffusion_network(kind, sd_path, seesr_path=None):
    """``network_g`` of a tiny x4 OSEDiff (``kind='osediff'``) or SeeSR generator on the folders above (SeeSR without
    its tagger: the tests have no RAM weights)."""
    if kind == 'osediff':
        return {'type': 'FinPercepOSEDiffGenerator', 'sd_path': sd_path, 'scale': 4, 'prompt': 'a photo',
                'explore_sigma': 0.1}
    return {'type': 'FinPercepSeeSRGenerator', 'sd_path': sd_path, 'seesr_path': seesr_path, 'scale': 4,
            'num_steps': 2, 'prompt': 'a photo', 'rollout_eta': 1.0, 'allow_no_tagger': True}
