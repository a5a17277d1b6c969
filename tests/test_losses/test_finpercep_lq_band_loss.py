"""FinPercepLQBandL1Loss: L1 plus the L1 of the images at the LQ's resolution, built from a BasicSR option dict."""
import pytest
import torch
from basicsr.losses import build_loss

import finpercep_basicsr.losses  # noqa: F401  (registers the loss)
from finpercep_basicsr.utils.errors import UserInputError


def _loss(**opt):
    return build_loss({'type': 'FinPercepLQBandL1Loss', **opt})


def test_value_is_l1_plus_the_weighted_l1_of_4x4_block_means():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 8, 12), torch.rand(2, 3, 8, 12)
    blocks = (x - y).view(2, 3, 2, 4, 3, 4).mean(dim=(3, 5)).abs()  # block means of the difference, by hand
    expected = 0.5 * ((x - y).abs().mean() + 3.0 * blocks.mean())
    assert float(_loss(loss_weight=0.5, lq_band_weight=3.0)(x, y)) == pytest.approx(float(expected), rel=1e-6)
    assert float(_loss(lq_band_weight=0.0)(x, y)) == pytest.approx(float((x - y).abs().mean()), rel=1e-6)
    per_pixel = _loss(lq_band_weight=3.0, reduction='none')(x, y)
    assert per_pixel.shape == x.shape
    assert float(per_pixel.mean()) == pytest.approx(float(_loss(lq_band_weight=3.0)(x, y)), rel=1e-6)
    assert float(per_pixel.sum()) == pytest.approx(float(_loss(lq_band_weight=3.0, reduction='sum')(x, y)), rel=1e-5)


def test_the_band_term_ignores_detail_and_weighs_tone():
    y = torch.full((1, 3, 16, 16), 0.5)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 0.2 - 0.1  # period 2 px: pure detail
    detail, tone = y + checker, y + 0.1  # the same L1 (0.1) either way
    loss = _loss(lq_band_weight=10.0)
    assert float(loss(detail, y)) == pytest.approx(0.1, rel=1e-5)
    assert float(loss(tone, y)) == pytest.approx(1.1, rel=1e-5)


def test_bad_options_and_sizes_are_named():
    with pytest.raises(UserInputError, match='scale must be an integer'):
        _loss(scale=0)
    with pytest.raises(UserInputError, match='lq_band_weight must be >= 0'):
        _loss(lq_band_weight=-1)
    with pytest.raises(ValueError, match='not divisible by scale=4'):
        _loss()(torch.rand(1, 3, 10, 8), torch.rand(1, 3, 10, 8))
