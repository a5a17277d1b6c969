"""Memory options of the diffusion policies: mixed precision, gradient checkpointing, tiled VAE."""

import pytest
import torch
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder
from tests.helpers.rlhf import make_paired_folder, make_reward_checkpoint, model_from_option_file, write_rlhf_options
from tests.helpers.stablesr import ENCODER_OPT, make_stablesr_sd

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.archs.diffusion_memory import configure_policy_memory
from finpercep_basicsr.archs.generator_policy import build_policy
from finpercep_basicsr.archs.latent_diffusion import vae_decode, vae_encode
from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator
from finpercep_basicsr.archs.seesr_arch import FinPercepSeeSRGenerator
from finpercep_basicsr.archs.stablesr_arch import FinPercepStableSRGenerator
from finpercep_basicsr.utils.errors import UserInputError

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('diffusion_memory')
    return {'sd': make_sd_folder(str(root / 'sd')), 'seesr': make_seesr_folder(str(root / 'seesr')),
            'stablesr_sd': make_stablesr_sd(str(root / 'stablesr_sd')), 'data': make_paired_folder(root / 'data'),
            'rm': make_reward_checkpoint(root / 'rm.pth')}


def _policy(kind, assets, **kwargs):
    if kind == 'osediff':
        return FinPercepOSEDiffGenerator(assets['sd'], prompt='a photo', explore_sigma=0.1, **kwargs)
    if kind == 'seesr':  # classifier-free guidance and a ControlNet LoRA: every model in the step
        return FinPercepSeeSRGenerator(assets['sd'], assets['seesr'], num_steps=2, prompt='a photo',
                                       guidance_scale=2.0, controlnet_lora=True, allow_no_tagger=True, **kwargs)
    return FinPercepStableSRGenerator(assets['stablesr_sd'], num_steps=2, encoder_opt=ENCODER_OPT, prompt='a photo',
                                      train_parts=['structcond', 'spade', 'cfw', 'lora'], lora_rank=2, **kwargs)


def _model(assets, tmp_path, rlhf):
    network = {'type': 'FinPercepOSEDiffGenerator', 'sd_path': assets['sd'], 'prompt': 'a photo', 'explore_sigma': 0.1}
    path = write_rlhf_options(tmp_path / 'opt.yml', assets['data'], assets['rm'], network_g=network,
                              rlhf={'algorithm': 'grpo', 'group_size': 2, **rlhf}, train__ema_decay=0)
    return model_from_option_file(path, tmp_path)


def test_mixed_precision_bf16_stores_the_base_in_bf16_and_trains_fp32_adapters(assets, tmp_path):
    torch.manual_seed(0)
    model = _model(assets, tmp_path, {'mixed_precision': 'bf16', 'algorithm': 'refl'})
    policy = model.net_g
    frozen = {n: p.dtype for n, p in policy.named_parameters() if not p.requires_grad}
    assert frozen and set(frozen.values()) == {torch.bfloat16}
    assert {n.split('.')[0] for n in frozen} >= {'unet', 'vae'}
    assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())
    g = torch.Generator().manual_seed(0)
    model.feed_data({'lq': torch.rand(1, 3, 8, 8, generator=g), 'gt': torch.rand(1, 3, 32, 32, generator=g)})
    before = [p.detach().clone() for p in policy.trainable_parameters()]
    model.optimize_parameters(1)
    assert model.nonfinite_skips == 0 and torch.isfinite(torch.tensor(model.log_dict['l_total']))
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.trainable_parameters()))
    states = [s for s in model.optimizer_g.state.values()]
    assert states and all(s['exp_avg'].dtype == torch.float32 for s in states)
    from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm
    model.rl_algorithm = build_rl_algorithm({'algorithm': 'grpo', 'group_size': 2})  # log-probs in bf16 too
    model.optimize_parameters(2)
    assert model.nonfinite_skips == 0 and torch.isfinite(torch.tensor(model.log_dict['l_total']))
    start = model.net_ref.start_tensors()  # the reference's copies of the trained tensors: fp32
    assert start['unet.conv_in.base_layer.weight'].dtype == torch.float32
    assert model.net_ref.policy is policy  # it runs the policy's bf16 base
    model.test()
    assert model.output.dtype == torch.float32 and torch.isfinite(model.output).all()


def test_mixed_precision_bad_values_are_clear_errors(assets):
    policy = _policy('osediff', assets)
    with pytest.raises(UserInputError, match='fp16 needs a CUDA GPU.*use bf16 on CPU'):
        configure_policy_memory(policy, {'mixed_precision': 'fp16'}, torch.device('cpu'))
    with pytest.raises(UserInputError, match='no, bf16 or fp16'):
        configure_policy_memory(policy, {'mixed_precision': 'half'}, torch.device('cpu'))


def _output_and_grads(policy, lq, seed=0):
    policy.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = policy(lq, grad_steps=2)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('kind', ['osediff', 'seesr', 'stablesr'])
def test_gradient_checkpointing_gives_equal_outputs_and_gradients(assets, kind):
    torch.manual_seed(1)
    policy = _policy(kind, assets)
    for p in policy.trainable_parameters():  # non-zero LoRA B, so every adapter has a gradient path
        p.data.add_(0.02 * torch.randn_like(p))
    lq = torch.rand(1, 3, 8, 8)
    calls = []
    # a pre-hook: a recomputation stops once it has rebuilt what the backward needs (early stop)
    policy.unet.down_blocks[0].resnets[0].register_forward_pre_hook(lambda *a: calls.append(1))
    plain_out, plain_grads = _output_and_grads(policy, lq)
    plain_calls = len(calls)
    configure_policy_memory(policy, {'gradient_checkpointing': True}, torch.device('cpu'))
    ckpt_out, ckpt_grads = _output_and_grads(policy, lq)
    assert len(calls) - plain_calls > plain_calls  # the block ran again in the backward, to rebuild activations
    assert torch.allclose(ckpt_out, plain_out, atol=1e-6)
    assert set(ckpt_grads) == set(plain_grads) and len(plain_grads) > 2
    prefixes = {n.split('.')[0] for n in plain_grads}
    assert prefixes >= ({'unet', 'controlnet'} if kind == 'seesr' else {'structcond', 'spade', 'cfw', 'unet'}
                        if kind == 'stablesr' else {'unet', 'vae'})
    for n, g in plain_grads.items():
        assert torch.allclose(ckpt_grads[n], g, rtol=1e-4, atol=1e-7), n


def test_gradient_checkpointing_on_a_policy_that_cannot_is_a_clear_error():
    policy = build_policy({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1,
                           'num_grow_ch': 4, 'scale': 4})
    with pytest.raises(UserInputError, match='gradient_checkpointing: BasicSRNetPolicy cannot checkpoint'):
        configure_policy_memory(policy, {'gradient_checkpointing': True}, torch.device('cpu'))
    with pytest.raises(UserInputError, match='vae_tile: BasicSRNetPolicy has no VAE'):
        configure_policy_memory(policy, {'vae_tile': 64}, torch.device('cpu'))


def test_vae_tile_decodes_and_encodes_in_tiles(assets):
    policy = _policy('osediff', assets)
    vae = policy.vae
    torch.manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6), size=(64, 64), mode='bicubic').clamp(0, 1)
    with torch.no_grad():
        z = vae_encode(vae, img)
        whole = vae_decode(vae, z)
        sizes = []
        handle = vae.decoder.register_forward_pre_hook(lambda m, a: sizes.append(tuple(a[0].shape[-2:])))
        configure_policy_memory(policy, {'vae_tile': 64}, torch.device('cpu'))  # tile >= image: untouched
        assert torch.equal(vae_decode(vae, z), whole) and sizes == [(32, 32)]
        configure_policy_memory(policy, {'vae_tile': 32, 'vae_tile_overlap': 0.25}, torch.device('cpu'))
        sizes.clear()
        tiled = vae_decode(vae, z)
        z_tiled = vae_encode(vae, img)
    handle.remove()
    assert len(sizes) == 9 and max(max(s) for s in sizes) == 16  # 16-latent tiles, stride 12 over 32
    assert tiled.shape == whole.shape and z_tiled.shape == z.shape
    assert not torch.equal(tiled, whole) and torch.isfinite(tiled).all()
    z_grad = z.clone().requires_grad_(True)
    vae_decode(vae, z_grad).mean().backward()  # the reward's gradient reaches every latent through the tiles
    assert (z_grad.grad != 0).float().mean() > 0.99
    with pytest.raises(UserInputError, match='multiple of the VAE factor 2'):
        configure_policy_memory(policy, {'vae_tile': 33}, torch.device('cpu'))
    stablesr = _policy('stablesr', assets, cfw_weight=0.5)
    with pytest.raises(UserInputError, match='cfw_weight: 0'):
        configure_policy_memory(stablesr, {'vae_tile': 32}, torch.device('cpu'))
