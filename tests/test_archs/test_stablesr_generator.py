"""StableSR policy: scale, trainable parts, the CFW knob, RLHF iterations, released-weight conversion."""
import os
from copy import deepcopy

import pytest
import torch
import yaml
from tests.helpers.stablesr import ENCODER_OPT, make_stablesr_sd, write_released_checkpoints

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.archs.latent_diffusion import vae_decode
from finpercep_basicsr.archs.stablesr_arch import FinPercepStableSRGenerator
from finpercep_basicsr.utils.errors import UserInputError


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def sd(tmp_path_factory):
    return make_stablesr_sd(str(tmp_path_factory.mktemp('stablesr') / 'sd'))


def _gen(sd, **kwargs):
    return FinPercepStableSRGenerator(sd, **{'num_steps': 2, 'encoder_opt': ENCODER_OPT, 'prompt': 'a photo', **kwargs})


def _grad_names(gen, lq):
    gen.zero_grad(set_to_none=True)
    gen(lq, grad_steps=1).mean().backward()
    return [n for n, p in gen.named_parameters() if p.grad is not None]


def test_scale_and_only_the_chosen_parts_train(sd):
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 8, 8)
    gen = _gen(sd)
    assert gen(lq).shape == (1, 3, 32, 32)
    grads = _grad_names(gen, lq)
    assert {n.split('.')[0] for n in grads} == {'structcond', 'spade'}  # both reached through the UNet hooks
    assert not any(p.requires_grad for n, p in gen.named_parameters() if n.startswith(('unet.', 'vae.', 'cfw.')))
    lora = _gen(sd, train_parts=['lora'], lora_rank=2)
    grads = _grad_names(lora, lq)
    assert grads and all('lora_' in n for n in grads)
    traj = gen.sample_trajectory(lq)
    assert torch.allclose(gen.log_prob(traj), traj.log_probs, atol=1e-5)
    with pytest.raises(UserInputError, match='cfw_weight'):
        _gen(sd, cfw_weight=1.5)


def test_cfw_weight_zero_is_the_plain_decoder_and_one_changes_it(sd):
    torch.manual_seed(0)
    gen = _gen(sd, train_parts=['cfw'])
    lq = torch.rand(1, 3, 8, 8)
    cond = gen.prepare(lq)
    assert sorted(cond['enc']) == [1]  # the 3-level VAE has one fusion level
    z = torch.randn_like(cond['z_lq'])
    gen.cfw_weight = 0.0
    plain = gen.decode(z, cond)
    assert torch.equal(plain, vae_decode(gen.vae, z))
    gen.cfw_weight = 1.0
    fused = gen.decode(z, cond)
    assert (fused - plain).abs().max() > 1e-3
    fused.mean().backward()
    assert all(p.grad is not None for p in gen.cfw.parameters())
    ref = deepcopy(gen)  # as the EMA copy: its hooks must use its own modules and its own weight
    with torch.no_grad():
        for p in ref.cfw.parameters():
            p.zero_()
    assert torch.allclose(ref.decode(z, cond), plain, atol=1e-6) and gen.cfw_weight == 1.0
    assert torch.equal(gen.decode(z, cond), fused)


def test_conversion_round_trip_and_unknown_keys(sd, tmp_path):
    from finpercep_basicsr.convert.stablesr_convert import convert_stablesr
    torch.manual_seed(0)
    gen = _gen(sd, cfw_weight=0.7)
    with torch.no_grad():  # fresh SPADE/CFW layers differ from any other random draw only by seed: perturb
        for p in list(gen.spade.parameters()) + list(gen.cfw.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    ckpt, cfw = write_released_checkpoints(gen, tmp_path)
    released = torch.load(ckpt, weights_only=True)['state_dict']
    assert any('.spade.mlp_gamma.' in k for k in released)
    assert 'structcond_stage_model.fea_tran.0.out_layers.3.weight' in released
    out = str(tmp_path / 'converted')
    convert_stablesr(ckpt, cfw, sd, out, num_heads=2, norm_groups=8)
    torch.manual_seed(5)
    loaded = FinPercepStableSRGenerator(sd, stablesr_path=out, num_steps=2, prompt='a photo', cfw_weight=0.7)
    own, new = gen.state_dict(), loaded.state_dict()
    assert set(own) == set(new) and all(torch.equal(own[k], new[k]) for k in own)
    lq = torch.rand(1, 3, 8, 8)
    torch.manual_seed(1)
    a = gen.sample_no_grad(lq)
    torch.manual_seed(1)
    assert torch.allclose(a, loaded.sample_no_grad(lq), atol=1e-6)

    state = torch.load(ckpt, weights_only=True)
    state['state_dict']['model.diffusion_model.input_blocks.99.0.spade.mlp_beta.weight'] = torch.zeros(1)
    state['state_dict']['extra_head.weight'] = torch.zeros(1)
    torch.save(state, tmp_path / 'bad.ckpt')
    with pytest.raises(UserInputError, match=r'input_blocks\.99.*extra_head'):
        convert_stablesr(str(tmp_path / 'bad.ckpt'), cfw, sd, str(tmp_path / 'bad'))
    with pytest.raises(UserInputError, match='missing.ckpt'):
        convert_stablesr(str(tmp_path / 'missing.ckpt'), cfw, sd, out, num_heads=2, norm_groups=8)
    with pytest.raises(UserInputError, match='stablesr.safetensors'):
        FinPercepStableSRGenerator(sd, stablesr_path=str(tmp_path / 'converted' / 'unet'))


@pytest.mark.slow
def test_rlhf_refl_iterations_through_the_model(sd, tmp_path):
    from tests.helpers.rlhf import make_paired_folder, make_reward_checkpoint, write_rlhf_options

    from finpercep_basicsr.models.finpercep_rlhf_model import FinPercepRLHFModel
    network = {'type': 'FinPercepStableSRGenerator', 'sd_path': sd, 'scale': 4, 'num_steps': 2, 'prompt': 'a photo',
               'cfw_weight': 0.5, 'encoder_opt': ENCODER_OPT}
    path = write_rlhf_options(tmp_path / 'opt.yml', make_paired_folder(tmp_path / 'data'),
                              make_reward_checkpoint(tmp_path / 'rm.pth'), network_g=network,
                              rlhf={'algorithm': 'refl', 'grad_steps': 1}, train__ema_decay=0)
    with open(path) as f:
        opt = yaml.safe_load(f)
    opt.update(dist=False, rank=0, world_size=1, is_train=True, auto_resume=False)
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'))
    os.makedirs(opt['path']['models'], exist_ok=True)
    torch.manual_seed(0)
    model = FinPercepRLHFModel(opt)
    policy = model.net_g
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    g = torch.Generator().manual_seed(0)
    model.feed_data({'lq': torch.rand(1, 3, 8, 8, generator=g), 'gt': torch.rand(1, 3, 32, 32, generator=g)})
    for it in (1, 2):
        before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
        model.optimize_parameters(it)
        assert 'l_reward' in model.log_dict and model.nonfinite_skips == 0
        params = dict(policy.named_parameters())
        assert any(not torch.equal(v, params[n]) for n, v in before.items())
    params = dict(policy.named_parameters())
    assert all(torch.equal(v, params[n]) for n, v in frozen.items())
    model.save(0, 2)
    saved = torch.load(tmp_path / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert saved and all(k.startswith(('structcond.', 'spade.')) for k in saved)
    model.test()
    assert model.output.shape == (1, 3, 32, 32)
