"""SR sources: shapes and ranges, tiling, packaged ncnn models, BasicSR checkpoints, and bad model files."""
import numpy as np
import pytest
import torch
from skimage import data

from finpercep_basicsr.fgr.sources.ncnn_models import packaged_ncnn_model
from finpercep_basicsr.fgr.sources import build_sr_source
from finpercep_basicsr.utils.tiling import tiled_upscale
from finpercep_basicsr.utils.errors import UserInputError


def _photo_lq(size=16):
    """A real photo patch (astronaut's face region) as float32 RGB in [0, 1]."""
    return np.ascontiguousarray(data.astronaut()[120:120 + size, 200:200 + size]).astype(np.float32) / 255.0


@pytest.mark.parametrize('kind', ['bicubic', 'lanczos'])
def test_resize_sources_shape_range_and_constant(kind):
    src = build_sr_source({'type': kind, 'scale': 3})
    assert (src.name, src.scale) == (kind, 3)
    out = src(_photo_lq(10))
    assert out.shape == (30, 30, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    flat = src(np.full((5, 7, 3), 0.25, np.float32))  # interpolation of a constant is that constant
    np.testing.assert_allclose(flat, 0.25, atol=1e-6)


def test_build_sr_source_rejects_bad_options():
    with pytest.raises(UserInputError, match='unknown type'):
        build_sr_source({'type': 'nearest'})
    with pytest.raises(UserInputError, match='sharpness'):
        build_sr_source({'type': 'bicubic', 'sharpness': 2})
    with pytest.raises(ValueError, match='RGB'):
        build_sr_source({'type': 'bicubic'})(np.zeros((4, 4), np.float32))


def test_tiled_upscale_is_seamless_for_a_local_operator():
    lq = np.random.default_rng(0).random((23, 17, 3), dtype=np.float32)

    def nearest(x):
        return np.repeat(np.repeat(x, 2, axis=0), 2, axis=1)

    np.testing.assert_array_equal(tiled_upscale(nearest, lq, 2, tile=8, tile_pad=3), nearest(lq))


def test_realesrgan_ncnn_on_a_real_photo():
    lq = _photo_lq(16)
    src = build_sr_source({'type': 'realesrgan_ncnn', 'name': 'esrgan'})
    out = src(lq)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, src(lq.copy()))  # deterministic, input buffer handled safely
    bicubic = build_sr_source({'type': 'bicubic'})(lq)
    diff = np.abs(out - bicubic).mean()
    # a real SR model: close to the interpolation in content, but not the interpolation
    assert 0.002 < diff < 0.1
    # tiles with context agree with the whole-image run away from the tile borders' far context
    tiled = build_sr_source({'type': 'realesrgan_ncnn', 'tile': 8, 'tile_pad': 6})(lq)
    assert np.abs(tiled - out).mean() < 5e-3


def test_realsr_ncnn_shape():
    out = build_sr_source({'type': 'realsr_ncnn'})(_photo_lq(8))
    assert out.shape == (32, 32, 3) and 0 <= out.min() and out.max() <= 1


def test_ncnn_missing_or_truncated_model_file(tmp_path):
    with pytest.raises(UserInputError, match='nowhere.param'):
        build_sr_source({'type': 'realesrgan_ncnn', 'param_path': str(tmp_path / 'nowhere.param'),
                         'bin_path': str(tmp_path / 'nowhere.bin')})
    param, weights, _ = packaged_ncnn_model('realesrgan-x4plus')
    truncated = tmp_path / 'cut.bin'
    with open(weights, 'rb') as f:
        truncated.write_bytes(f.read(5000))
    with pytest.raises(UserInputError, match='cut.bin'):
        build_sr_source({'type': 'realesrgan_ncnn', 'param_path': param, 'bin_path': str(truncated)})
    with pytest.raises(UserInputError, match='both'):
        build_sr_source({'type': 'realesrgan_ncnn', 'param_path': param})


TINY_RRDB = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4,
             'scale': 2}


def _save_tiny_rrdb(path, key='params_ema'):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    torch.manual_seed(0)
    net = RRDBNet(**{k: v for k, v in TINY_RRDB.items() if k != 'type'}).eval()
    torch.save({key: net.state_dict()}, path)
    return net


@pytest.mark.parametrize('key', ['params_ema', 'params'])
def test_basicsr_source_matches_the_network(tmp_path, key):
    path = str(tmp_path / 'rrdb.pth')
    net = _save_tiny_rrdb(path, key)
    src = build_sr_source({'type': 'basicsr', 'name': 'rrdb', 'network': TINY_RRDB, 'path': path, 'scale': 2})
    lq = _photo_lq(12)
    with torch.no_grad():
        ref = net(torch.from_numpy(lq.transpose(2, 0, 1).copy())[None])[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(src(lq), np.clip(ref, 0, 1), atol=1e-6)


def test_basicsr_source_bad_checkpoints(tmp_path):
    opt = {'type': 'basicsr', 'network': TINY_RRDB, 'scale': 2}
    with pytest.raises(UserInputError, match='missing.pth'):
        build_sr_source({**opt, 'path': str(tmp_path / 'missing.pth')})
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(UserInputError, match='corrupt.pth'):
        build_sr_source({**opt, 'path': str(corrupt)})
    path = str(tmp_path / 'rrdb.pth')
    _save_tiny_rrdb(path)
    with pytest.raises(UserInputError, match='does not fit'):
        build_sr_source({**opt, 'path': path, 'network': {**TINY_RRDB, 'num_feat': 16}})


def test_diffusers_source_needs_a_pipeline_folder(tmp_path):
    with pytest.raises(UserInputError, match='not a diffusers pipeline folder'):
        build_sr_source({'type': 'diffusers', 'path': str(tmp_path / 'no_pipeline')})


def _tiny_upscale_pipeline(folder):
    """A randomly initialised, tiny StableDiffusionUpscalePipeline saved to ``folder`` (no download)."""
    import json

    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    vocab, merges = str(folder) + '_vocab.json', str(folder) + '_merges.txt'
    with open(vocab, 'w') as f:
        json.dump({'<|startoftext|>': 0, '<|endoftext|>': 1, '!': 2}, f)
    with open(merges, 'w') as f:
        f.write('#version: 0.2\n')
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=3, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=7, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
                                up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=8, num_class_embeds=400)
    vae = AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                        block_out_channels=(8, 8, 16), latent_channels=4, norm_num_groups=8, layers_per_block=1,
                        scaling_factor=0.08333)
    tokenizer = CLIPTokenizer(vocab, merges, model_max_length=8)
    StableDiffusionUpscalePipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(),
                                   max_noise_level=350).save_pretrained(str(folder))


@pytest.mark.slow
def test_diffusers_source_runs_a_local_upscale_pipeline(tmp_path):
    _tiny_upscale_pipeline(tmp_path / 'pipe')
    src = build_sr_source({'type': 'diffusers', 'name': 'sd_x4', 'path': str(tmp_path / 'pipe'),
                           'num_inference_steps': 2, 'noise_level': 20, 'seed': 3})
    lq = _photo_lq(8)
    out = src(lq)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, src(lq))  # fixed generator per call
