"""Diffusion generator policies: released-format loading, checkpoint safety, scale, LoRA-only training."""
import os

import pytest
import torch
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator, osediff_lora_targets
from finpercep_basicsr.archs.seesr_arch import FinPercepSeeSRGenerator
from finpercep_basicsr.utils.errors import UserInputError


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def sd(tmp_path_factory):
    return make_sd_folder(str(tmp_path_factory.mktemp('sd') / 'sd'))


def _write_osediff_pkl(gen, path):
    """A checkpoint laid out like OSEDiff's released osediff.pkl (its save_model keys)."""
    ckpt = dict(osediff_lora_targets(gen.unet, gen.vae), rank_unet=4, rank_vae=4)
    ckpt['state_dict_unet'] = {k: v for k, v in gen.unet.state_dict().items() if 'lora' in k or 'conv_in' in k}
    ckpt['state_dict_vae'] = {k: v for k, v in gen.vae.state_dict().items() if 'lora' in k}
    torch.save(ckpt, path)


def test_osediff_loads_its_released_checkpoint_format(sd, tmp_path):
    torch.manual_seed(1)
    gen = FinPercepOSEDiffGenerator(sd, prompt='a photo')
    for p in gen.trainable_parameters():  # make the adapters differ from a fresh initialisation
        p.data.add_(0.01 * torch.randn_like(p))
    _write_osediff_pkl(gen, tmp_path / 'osediff.pkl')
    keys = torch.load(tmp_path / 'osediff.pkl', weights_only=True)['state_dict_unet']
    assert any('.lora_A.default_encoder.' in k for k in keys) and any('lora_B.default_others' in k for k in keys)
    torch.manual_seed(2)
    loaded = FinPercepOSEDiffGenerator(sd, osediff_path=str(tmp_path / 'osediff.pkl'), prompt='a photo')
    lq = torch.rand(1, 3, 8, 8)
    out = loaded.sample_no_grad(lq)
    assert out.shape == (1, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out, gen.sample_no_grad(lq), atol=1e-6)


def test_osediff_checkpoint_errors_are_clear(sd, tmp_path):
    torch.save({'rank_unet': 4}, tmp_path / 'partial.pkl')
    with pytest.raises(UserInputError, match='missing .*state_dict_unet'):
        FinPercepOSEDiffGenerator(sd, osediff_path=str(tmp_path / 'partial.pkl'))

    class Evil:  # a pickle that would run code on load
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    torch.save({'x': Evil()}, tmp_path / 'evil.pkl')
    with pytest.raises(UserInputError, match='weights_only'):
        FinPercepOSEDiffGenerator(sd, osediff_path=str(tmp_path / 'evil.pkl'))
    with pytest.raises(UserInputError, match='missing: unet'):
        FinPercepOSEDiffGenerator(str(tmp_path))
    with pytest.raises(UserInputError, match='multiple of'):
        FinPercepOSEDiffGenerator(sd, scale=1)(torch.rand(1, 3, 7, 7))


def test_seesr_loads_image_cross_attention_and_trains_only_lora(sd, tmp_path):
    seesr = make_seesr_folder(str(tmp_path / 'seesr'))
    gen = FinPercepSeeSRGenerator(sd, seesr, num_steps=3, prompt='a photo', guidance_scale=2.0,
                                  allow_no_tagger=True)
    from safetensors.torch import load_file
    released = load_file(os.path.join(seesr, 'unet', 'diffusion_pytorch_model.safetensors'))
    key = 'down_blocks.0.image_attentions.0.transformer_blocks.0.attn2.to_k.weight'  # SeeSR's naming
    own = gen.unet.state_dict()[key.replace('to_k.weight', 'to_k.base_layer.weight')]  # LoRA wraps it
    assert torch.equal(own, released[key])
    lq = torch.rand(1, 3, 8, 8)
    sr = gen(lq, grad_steps=1)
    assert sr.shape == (1, 3, 32, 32)
    sr.mean().backward()
    grads = [n for n, p in gen.named_parameters() if p.grad is not None]
    assert grads and all('lora_' in n for n in grads)
    traj = gen.sample_trajectory(lq)
    assert traj.log_probs.shape == (1, 2)  # the final step to x0 is deterministic
    assert torch.allclose(gen.log_prob(traj), traj.log_probs, atol=1e-5)  # same parameters: same density
    with pytest.raises(UserInputError, match='controlnet'):
        os.rename(os.path.join(seesr, 'controlnet'), os.path.join(seesr, 'cn'))
        FinPercepSeeSRGenerator(sd, seesr)
