"""FinPercepRewardNet: shapes for odd sizes, gradients to the input, stage growth, encoders, bad input."""
import pytest
import torch

from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.models.finpercep_base_model import describe_state_dict_mismatch

TINY = dict(encoder='conv', channels=[8, 8, 16, 16], decoder_width=8, refine_ch=4, mlp_hidden=16)


def tiny(stage, seed=0):
    torch.manual_seed(seed)
    return FinPercepRewardNet(stage=stage, **TINY)


@pytest.mark.parametrize('stage', [0, 1, 2, 3])
@pytest.mark.parametrize('size', [(37, 53), (5, 7), (64, 64)])
def test_output_contract_for_odd_sizes(stage, size):
    out = tiny(stage)(torch.rand(2, 3, *size))
    assert out['score'].shape == (2,) and torch.isfinite(out['score']).all()
    assert out['pdm'].shape == (2, 1, *size)
    assert out['pdm'].min() >= 0 and out['pdm'].max() <= 1
    if stage == 0:
        assert not tiny(0).has_map and torch.equal(out['pdm'], torch.zeros_like(out['pdm']))


@pytest.mark.parametrize('stage', [0, 3])
def test_gradients_reach_the_input_even_with_a_frozen_encoder(stage):
    net = tiny(stage).freeze_encoder(True).train()
    x = torch.rand(1, 3, 33, 41, requires_grad=True)
    out = net(x)
    (out['score'].sum() + (1 - out['pdm'].amax())).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.encoder.parameters())
    assert not net.encoder.training and net.score_head.training


def _moved(net, scale=0.1):
    """Pretend the net was trained: every parameter (also the zero-initialised growth parts) moves."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def test_map_depends_on_the_image_where_it_changes():
    # the stage-3 map must use the fine levels: changing one corner changes the map mostly there
    net = _moved(tiny(3)).eval()
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., :16, :16] = torch.rand(1, 3, 16, 16)
    diff = (net(x)['pdm'] - net(y)['pdm']).abs()[0, 0]
    assert diff[:16, :16].mean() > 3 * diff[40:, 40:].mean()


@pytest.mark.parametrize('k', [0, 1, 2])
def test_stage_k_checkpoint_loads_into_stage_k_plus_1(k):
    old, new = tiny(k, seed=1), tiny(k + 1, seed=2)
    if k == 0:  # train stage 0 for real: the map-weighted half of the score head gets no gradient
        opt = torch.optim.Adam(old.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            old(torch.rand(2, 3, 32, 32))['score'].pow(2).mean().backward()
            opt.step()
    else:
        _moved(old, 0.05)
    old_state, new_state = old.state_dict(), new.state_dict()
    problems = describe_state_dict_mismatch(new_state, old_state)
    assert problems and all(line.startswith('missing keys: decoder.') for line in problems), problems
    new.load_state_dict(old_state, strict=False)
    for key, value in old_state.items():
        assert torch.equal(new.state_dict()[key], value), key
    x = torch.rand(2, 3, 40, 48)
    old.eval(), new.eval()
    if k in (0, 2):  # the new parts start silent: same score (and same map from stage 2 to 3)
        torch.testing.assert_close(new(x)['score'], old(x)['score'])
    if k == 2:
        torch.testing.assert_close(new(x)['pdm'], old(x)['pdm'])


@pytest.mark.parametrize('bad, match', [
    (torch.rand(1, 4, 16, 16), r'RGB \(B, 3, H, W\)'),
    (torch.rand(3, 16, 16), r'RGB \(B, 3, H, W\)'),
    (torch.full((1, 3, 16, 16), float('nan')), 'NaN or Inf'),
    (torch.rand(1, 3, 16, 16) * 255, r'pixels in \[0, 1\]'),
    (torch.rand(1, 3, 16, 16) * 2 - 1, r'pixels in \[0, 1\]'),
])
def test_bad_input_is_a_clear_value_error(bad, match):
    if bad.dim() == 4 and bad.size(1) == 3 and torch.isfinite(bad).all() and bad.max() <= 1:
        bad[0, 0, 0, 0] = -1  # make sure the [-1, 1] case really leaves the range
    with pytest.raises(ValueError, match=match):
        tiny(1)(bad)
    inf = torch.rand(1, 3, 16, 16)
    inf[0, 1, 2, 3] = float('inf')
    with pytest.raises(ValueError, match='NaN or Inf'):
        tiny(1)(inf)


def test_unknown_stage_is_rejected():
    with pytest.raises(ValueError, match='stage must be 0..3'):
        FinPercepRewardNet(stage=4, **TINY)


def test_default_efficientnet_encoder_is_pretrained_and_maps_odd_sizes():
    from finpercep_basicsr.archs.backbones import efficientnet_lite_weights_path
    net = FinPercepRewardNet(stage=3)
    ref = torch.load(efficientnet_lite_weights_path('efficientnet-lite0'), map_location='cpu', weights_only=True)
    torch.testing.assert_close(net.encoder.stem[0].weight, ref['_conv_stem.weight'])
    x = torch.rand(1, 3, 45, 70, requires_grad=True)
    out = net.eval()(x)
    assert out['pdm'].shape == (1, 1, 45, 70)
    out['score'].sum().backward()
    assert x.grad.abs().sum() > 0


def test_timm_encoder_from_a_local_weights_file(tmp_path):
    import timm
    ref = timm.create_model('resnet18', pretrained=False, features_only=True)
    path = tmp_path / 'resnet18.pth'
    torch.save(ref.state_dict(), path)
    net = FinPercepRewardNet(encoder='timm:resnet18', weights_path=str(path), stage=2, decoder_width=8, mlp_hidden=8)
    torch.testing.assert_close(net.encoder.net.net.conv1.weight, ref.conv1.weight)
    assert net.encoder.strides == [4, 8, 16, 32]
    assert net(torch.rand(1, 3, 50, 34))['pdm'].shape == (1, 1, 50, 34)


def test_clip_vision_tower_from_a_local_folder(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                           image_size=32, patch_size=8)
    torch.manual_seed(0)
    CLIPVisionModel(cfg).save_pretrained(tmp_path / 'clip')
    net = FinPercepRewardNet(encoder=f'clip:{tmp_path / "clip"}', stage=3, decoder_width=8, refine_ch=4, mlp_hidden=8)
    assert net.encoder.channels == [32] * 4 and net.encoder.layers == [1, 2, 3, 4]
    x = torch.rand(2, 3, 45, 61, requires_grad=True)
    out = net(x)
    assert out['score'].shape == (2,) and out['pdm'].shape == (2, 1, 45, 61)
    out['score'].sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='cannot load a CLIP vision tower'):
        FinPercepRewardNet(encoder=f'clip:{tmp_path / "missing"}')


def test_texture_stats_see_sharpening_and_blur_in_opposite_directions():
    from finpercep_basicsr.archs.rm_texture import TextureStats
    import torch.nn.functional as F
    torch.manual_seed(0)
    base = F.interpolate(torch.rand(1, 3, 16, 16), size=(64, 64), mode='bilinear', align_corners=False)
    blurred = F.avg_pool2d(F.pad(base, (2, 2, 2, 2), mode='replicate'), 5, stride=1)
    sharpened = (base + 2.0 * (base - blurred)).clamp(0, 1)
    stats = TextureStats(windows=(3, 9))
    energy = {name: stats(img)[:, 0].mean().item() for name, img in
              (('base', base), ('blurred', blurred), ('sharpened', sharpened))}
    assert energy['blurred'] < energy['base'] < energy['sharpened']
    assert stats(base).shape == (1, 6, 64, 64)


def test_texture_branch_starts_as_the_identity_and_then_moves_the_map():
    torch.manual_seed(0)
    plain, textured = FinPercepRewardNet(stage=2, texture=False, **TINY), FinPercepRewardNet(stage=2, **TINY)
    textured.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(2, 3, 48, 40)
    plain.eval(), textured.eval()
    torch.testing.assert_close(textured(x)['pdm'], plain(x)['pdm'])
    _moved(textured.decoder.texture)
    assert not torch.allclose(textured(x)['pdm'], plain(x)['pdm'])


def test_map_gain_lowers_the_score_of_an_image_whose_map_lights_up():
    net = _moved(tiny(2)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        net.decoder.map_gain.zero_()
    before = net(x)
    with torch.no_grad():
        net.decoder.map_gain.fill_(2.0)
    after = net(x)
    torch.testing.assert_close(after['score'], before['score'] - 2.0 * before['pdm'].mean(dim=(1, 2, 3)))


def test_partly_frozen_encoder_trains_only_the_named_blocks_and_backward_stops_there():
    net = tiny(2).freeze_encoder(True, trainable=['levels.3.*']).train()
    reached = []
    net.encoder.levels[1].register_full_backward_hook(lambda *args: reached.append('levels.1'))
    out = net(torch.rand(2, 3, 32, 32))
    (out['score'].sum() + out['pdm'].mean()).backward()
    trained = {n for n, p in net.encoder.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith('levels.3.') for n in trained)
    assert not reached  # no gradient was computed through the frozen early levels
    with pytest.raises(Exception, match="encoder_trainable: 'nope.*' matches no encoder parameter"):
        tiny(2).freeze_encoder(True, trainable=['nope.*'])


def test_texture_discriminator_starts_as_the_identity_and_then_moves_the_map():
    plain = _moved(tiny(3)).eval()
    grown = FinPercepRewardNet(stage=3, texture_disc=4, **TINY).eval()
    missing = grown.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith('decoder.texture_disc.') for k in missing)
    x = torch.rand(2, 3, 48, 40)
    torch.testing.assert_close(grown(x)['pdm'], plain(x)['pdm'])
    torch.testing.assert_close(grown(x)['score'], plain(x)['score'])
    _moved(grown.decoder.texture_disc)
    assert not torch.allclose(grown(x)['pdm'], plain(x)['pdm'])
    assert FinPercepRewardNet(stage=2, texture_disc=4, **TINY).decoder.texture_disc is None  # a stage-3 part


def test_texture_discriminator_field_is_33_px():
    from finpercep_basicsr.archs.rm_texture import TextureDiscriminator
    torch.manual_seed(0)
    branch = _moved(TextureDiscriminator(width=8, ch=4, stats_ch=0), scale=0.3).eval()
    image, context = torch.rand(1, 3, 64, 64), torch.rand(1, 8, 16, 16)
    poked = image.clone()
    poked[..., 32, 32] += 0.5
    rows, cols = ((branch(poked, context) - branch(image, context)).abs()[0, 0] > 0).nonzero().unbind(1)
    assert (rows - 32).abs().max() == 16 and (cols - 32).abs().max() == 16
