"""The torch PIQE: pyiqa's value on real photos (any size), a gradient that lowers pyiqa's PIQE, as a reward."""
import pytest
import torch
from pyiqa.archs.piqe_arch import piqe
from skimage import data
from tests.helpers.descent import descend

from finpercep_basicsr.losses.finpercep_global_iqa_loss import FinPercepGlobalIQALoss
from finpercep_basicsr.metrics.piqe_torch import PIQE


def _tensor(photo, h, w):
    return torch.from_numpy(getattr(data, photo)()[:h, :w].copy()).permute(2, 0, 1)[None].float().div(255)


@pytest.mark.parametrize('photo, h, w', [('astronaut', 256, 384), ('coffee', 192, 320), ('chelsea', 128, 128),
                                         ('rocket', 200, 300), ('astronaut', 77, 99)])
def test_equals_pyiqa_piqe_on_real_photos(photo, h, w):
    x = _tensor(photo, h, w)
    assert PIQE()(x).item() == pytest.approx(piqe(x)[0].item(), rel=1e-4)


def test_descending_its_gradient_lowers_pyiqa_piqe():
    x0 = _tensor('astronaut', 128, 128)
    result = descend(PIQE(), x0).mul(255).round().div(255)  # as saved to an 8-bit image
    assert piqe(result)[0].item() < 0.8 * piqe(x0)[0].item()


def test_as_a_reward_it_is_minus_piqe_per_image():
    x = torch.cat([_tensor('astronaut', 64, 64), _tensor('coffee', 64, 64)])
    reward, _ = FinPercepGlobalIQALoss(metric='piqe', reduction='none').image_rewards(x)
    torch.testing.assert_close(reward, -PIQE()(x))
    assert reward[0] != reward[1]
    with pytest.raises(ValueError, match='at least 16x16'):
        PIQE()(torch.rand(1, 3, 8, 32))
