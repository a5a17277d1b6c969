"""The reward network's fast paths compute what the plain layers compute (float64, tight tolerances).

The cost bar of the shipped reward model rests on them: folding each eval-mode BatchNorm into its
convolution, a separable box filter for the texture statistics, the refinement's first conv split
over its inputs instead of run on their concatenation, and channels-last tensors.
"""
import pytest
import torch
import torch.nn.functional as F

from finpercep_basicsr.archs.backbones import EfficientNetLiteFeatures
from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.archs.rm_decoder import FullResRefine
from finpercep_basicsr.archs.rm_texture import TextureStats


def _library_forward(features, x):
    """The EfficientNet-Lite package's own modules, called as the package calls them."""
    x = features.stem(features.normalize(x))
    feats = []
    for i, block in enumerate(features.blocks):
        x = block(x)
        if i in features.level_ends:
            feats.append(x)
    return feats


def _randomise_batchnorm(module):
    """Statistics and affine parameters far from the identity, so a wrong fold cannot hide."""
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.2, 3.0)
            bn.weight.normal_(1, 0.5)
            bn.bias.normal_(0, 0.5)


def _input_and_bn_grads(features, forward, x):
    x = x.clone().requires_grad_(True)
    feats = forward(features, x)
    sum((f * torch.linspace(-1, 1, f.numel(), dtype=f.dtype).view_as(f)).sum() for f in feats).backward()
    bn = features.blocks[5]._bn1
    grads = [x.grad, bn.weight.grad.clone(), bn.bias.grad.clone()]
    features.zero_grad(set_to_none=True)
    return [f.detach() for f in feats], grads


@pytest.mark.parametrize('size', [(64, 64), (45, 70)])
def test_folded_encoder_matches_the_library_modules_in_eval_mode(size):
    torch.manual_seed(0)
    features = EfficientNetLiteFeatures(pretrained=False).double().eval()
    _randomise_batchnorm(features)
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    ours, our_grads = _input_and_bn_grads(features, lambda f, v: f(v), x)
    ref, ref_grads = _input_and_bn_grads(features, _library_forward, x)
    for a, b in zip(ours + our_grads, ref + ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_encoder_in_training_mode_uses_batch_statistics_as_the_library_does():
    torch.manual_seed(0)
    features = EfficientNetLiteFeatures(pretrained=False).double().train()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    ours = features(x)
    ref = _library_forward(features, x)  # a second pass: the running statistics move, batch statistics do not
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_texture_stats_box_filter_is_the_square_window_mean():
    x = torch.rand(2, 3, 23, 31, dtype=torch.float64)
    ours = TextureStats((3, 9)).double()(x)
    luma = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    kernels = TextureStats((3, 9)).kernels.double()
    resp = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode='replicate'), kernels)
    energies = torch.cat([resp[:, :1].square(), resp[:, 1:].square().sum(1, keepdim=True)], dim=1)
    for i, w in enumerate((3, 9)):
        e = F.avg_pool2d(F.pad(energies, (w // 2,) * 4, mode='replicate'), w, stride=1)
        log_e = torch.log(e + (1 / 255) ** 2)
        torch.testing.assert_close(ours[:, 3 * i], (log_e[:, 0] + 9) / 3)
        torch.testing.assert_close(ours[:, 3 * i + 2], log_e[:, 0] - log_e[:, 1])


def test_refinement_equals_its_conv_stack_on_the_concatenated_inputs():
    torch.manual_seed(0)
    refine = FullResRefine(width=8, ch=4, stats_ch=6).double()
    with torch.no_grad():
        for p in refine.parameters():
            p.normal_(0, 0.3)  # the last conv starts at zero: move it
    image = torch.rand(1, 3, 20, 24, dtype=torch.float64)
    feat, logits, stats = (torch.randn(1, 8, 5, 6), torch.randn(1, 1, 20, 24), torch.randn(1, 6, 20, 24))
    feat, logits, stats = feat.double(), logits.double(), stats.double()
    guide = F.interpolate(refine.proj(feat), size=(20, 24), mode='bilinear', align_corners=False)
    parts = torch.cat([refine.stem(image * 2 - 1), guide, logits, stats], dim=1)
    torch.testing.assert_close(refine(image, feat, logits, stats), logits + refine.body(parts))


def test_reward_net_is_channels_last_and_loads_a_contiguous_checkpoint():
    torch.manual_seed(0)
    kw = dict(encoder='conv', channels=[8, 8, 16, 16], stage=3, decoder_width=8, refine_ch=4, mlp_hidden=16)
    net = FinPercepRewardNet(**kw).eval()
    assert net.decoder.refine.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    state = {k: v.contiguous() + 0.01 for k, v in net.state_dict().items()}  # as an older checkpoint stores it
    other = FinPercepRewardNet(**kw).eval()
    other.load_state_dict(state)
    assert other.decoder.refine.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 40, 40)
    plain = FinPercepRewardNet(**kw).eval().to(memory_format=torch.contiguous_format)
    plain.load_state_dict(state)
    torch.testing.assert_close(other(x)['pdm'], plain(x)['pdm'], rtol=1e-5, atol=1e-6)
