"""convert/policy_export.py (scripts/export_lora.py): round trips through the released layouts (OSEDiff pkl,
diffusers LoRA, StableSR ckpt)."""
import os

import pytest
import torch
import yaml
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder
from tests.helpers.stablesr import ENCODER_OPT, make_stablesr_sd

from finpercep_basicsr.archs.generator_policy import build_policy
from finpercep_basicsr.convert.policy_export import export_policy
from finpercep_basicsr.utils.errors import UserInputError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')
    return {'sd': make_sd_folder(str(root / 'sd')), 'seesr': make_seesr_folder(str(root / 'seesr')),
            'stablesr_sd': make_stablesr_sd(str(root / 'stablesr_sd'))}


def _network(kind, assets):
    if kind == 'osediff':
        return {'type': 'FinPercepOSEDiffGenerator', 'sd_path': assets['sd'], 'prompt': 'a photo'}
    if kind == 'seesr':
        return {'type': 'FinPercepSeeSRGenerator', 'sd_path': assets['sd'], 'seesr_path': assets['seesr'],
                'num_steps': 2, 'prompt': 'a photo', 'controlnet_lora': True, 'allow_no_tagger': True}
    return {'type': 'FinPercepStableSRGenerator', 'sd_path': assets['stablesr_sd'], 'num_steps': 2, 'prompt': 'a photo',
            'encoder_opt': ENCODER_OPT, 'train_parts': ['structcond', 'spade', 'cfw', 'lora'], 'lora_rank': 2}


def _tuned(kind, assets, tmp_path):
    """A policy whose trainable tensors moved away from their initialisation, its net_g file and options."""
    network = _network(kind, assets)
    torch.manual_seed(3)
    policy = build_policy(network)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save({'params': policy.weights_module().state_dict()}, tmp_path / 'net_g.pth')
    with open(tmp_path / 'opt.yml', 'w') as f:
        yaml.safe_dump({'name': 'x', 'scale': 4, 'network_g': network}, f)
    return policy.eval()


def _export(tmp_path, fmt, out):
    paths, key = export_policy(str(tmp_path / 'opt.yml'), str(tmp_path / 'net_g.pth'), fmt, str(out))
    assert key == 'params' and all(os.path.exists(p) for p in paths)


def _sample(policy, seed=0):
    torch.manual_seed(seed)
    lq = torch.rand(1, 3, 8, 8)
    torch.manual_seed(seed + 1)
    return policy.sample_no_grad(lq)


def test_export_osediff_pkl_loads_the_way_osediff_test_script_does(assets, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    policy = _tuned('osediff', assets, tmp_path)
    _export(tmp_path, 'osediff_pkl', tmp_path / 'osediff.pkl')
    ckpt = torch.load(tmp_path / 'osediff.pkl', weights_only=True)
    # OSEDiff's OSEDiff_test.load_ckpt: peft adapters from the lists, then copy every lora/conv_in tensor
    unet = UNet2DConditionModel.from_pretrained(assets['sd'], subfolder='unet')
    vae = AutoencoderKL.from_pretrained(assets['sd'], subfolder='vae')
    for part in ('encoder', 'decoder', 'others'):
        unet.add_adapter(LoraConfig(r=ckpt['rank_unet'], init_lora_weights='gaussian',
                                    target_modules=ckpt[f'unet_lora_{part}_modules']), adapter_name=f'default_{part}')
    for n, p in unet.named_parameters():
        if 'lora' in n or 'conv_in' in n:
            p.data.copy_(ckpt['state_dict_unet'][n])
    unet.set_adapter(['default_encoder', 'default_decoder', 'default_others'])
    vae.add_adapter(LoraConfig(r=ckpt['rank_vae'], init_lora_weights='gaussian',
                               target_modules=ckpt['vae_lora_encoder_modules']), adapter_name='default_encoder')
    for n, p in vae.named_parameters():
        if 'lora' in n:
            p.data.copy_(ckpt['state_dict_vae'][n])
    vae.set_adapter(['default_encoder'])
    for mine, theirs in ((policy.unet, unet), (policy.vae, vae)):
        assert mine.state_dict().keys() == theirs.state_dict().keys()
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in mine.state_dict().items())
    z, text = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 16)
    with torch.no_grad():
        assert torch.allclose(unet(z, 999, encoder_hidden_states=text).sample,
                              policy.unet(z, 999, encoder_hidden_states=text).sample, atol=1e-6)


def test_export_diffusers_lora_for_seesr_loads_with_diffusers(assets, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors import safe_open

    from finpercep_basicsr.archs.seesr_arch import _Context, load_seesr_part
    policy = _tuned('seesr', assets, tmp_path)
    _export(tmp_path, 'diffusers_lora', tmp_path / 'lora')
    with safe_open(str(tmp_path / 'lora' / 'pytorch_lora_weights.safetensors'), 'pt') as f:
        keys = list(f.keys())
    assert keys and all(k.startswith('unet.') and '.lora_' in k for k in keys)
    z, text, t = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 16), torch.tensor([500])
    cond = torch.rand(1, 3, 16, 16)  # the tiny ControlNet embeds its condition at 1/2
    unet = load_seesr_part(UNet2DConditionModel, assets['seesr'], 'unet', _Context())  # SeeSR's released UNet
    unet.load_lora_adapter(str(tmp_path / 'lora' / 'pytorch_lora_weights.safetensors'), prefix='unet',
                           adapter_name='default')
    controlnet = load_seesr_part(ControlNetModel, assets['seesr'], 'controlnet', _Context())
    controlnet.load_lora_adapter(str(tmp_path / 'lora' / 'controlnet' / 'pytorch_lora_weights.safetensors'),
                                 prefix=None, adapter_name='default')
    with torch.no_grad():
        for mine, theirs in ((policy.controlnet, controlnet), (policy.unet, unet)):
            kwargs = {'controlnet_cond': cond, 'return_dict': False} if mine is policy.controlnet else {}
            a = mine(z, t, encoder_hidden_states=text, **kwargs)
            b = theirs(z, t, encoder_hidden_states=text, **kwargs)
            a, b = (a[1], b[1]) if kwargs else (a.sample, b.sample)
            assert torch.allclose(a, b, atol=1e-6)


def test_export_stablesr_ckpt_converts_back_to_the_same_policy(assets, tmp_path):
    from finpercep_basicsr.archs.stablesr_arch import FinPercepStableSRGenerator
    from finpercep_basicsr.convert.stablesr_convert import convert_stablesr
    policy = _tuned('stablesr', assets, tmp_path)
    _export(tmp_path, 'stablesr_ckpt', tmp_path / 'released')
    main = torch.load(tmp_path / 'released' / 'stablesr.ckpt', weights_only=True)['state_dict']
    assert any(k.startswith('model.diffusion_model.input_blocks.1.0.spade.') for k in main)
    assert not any('lora' in k for k in main)  # merged into the UNet weights
    convert_stablesr(tmp_path / 'released' / 'stablesr.ckpt', tmp_path / 'released' / 'vqgan_cfw.ckpt',
                     assets['stablesr_sd'], str(tmp_path / 'converted'), num_heads=ENCODER_OPT['num_heads'],
                     norm_groups=ENCODER_OPT['norm_groups'])
    back = FinPercepStableSRGenerator(assets['stablesr_sd'], stablesr_path=str(tmp_path / 'converted'), num_steps=2,
                                      prompt='a photo').eval()
    assert torch.allclose(_sample(back), _sample(policy), atol=1e-5)


@pytest.mark.parametrize('kind', ['osediff', 'seesr', 'stablesr'])
def test_export_merged_full_weights_give_the_tuned_outputs(assets, tmp_path, kind):
    policy = _tuned(kind, assets, tmp_path)
    _export(tmp_path, 'merged', tmp_path / 'merged')
    network = _network(kind, assets)
    merged = str(tmp_path / 'merged')
    if kind == 'osediff':
        network['sd_path'] = merged  # fresh adapters start at zero: the merged base alone
    elif kind == 'seesr':
        network.update(seesr_path=merged, controlnet_lora=False)
    else:
        network.update(stablesr_path=merged, train_parts=['structcond'])
        network.pop('encoder_opt')
    back = build_policy(network).eval()
    assert torch.allclose(_sample(back), _sample(policy), atol=1e-5)


def test_export_format_that_does_not_fit_the_policy_is_a_clear_error(assets, tmp_path):
    _tuned('osediff', assets, tmp_path)
    with pytest.raises(UserInputError, match='stablesr_ckpt is for FinPercepStableSRGenerator.*osediff_pkl'):
        export_policy(str(tmp_path / 'opt.yml'), str(tmp_path / 'net_g.pth'), 'stablesr_ckpt', str(tmp_path / 'x'))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        export_policy(str(tmp_path / 'opt.yml'), str(tmp_path / 'missing.pth'), 'merged', str(tmp_path / 'x'))
    assert not os.path.exists(tmp_path / 'x')
