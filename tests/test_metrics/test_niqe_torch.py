"""The torch NIQE: BasicSR's value on real photos, a gradient that lowers it (as BasicSR confirms), as a reward."""
import os

import basicsr.metrics
import numpy as np
import pytest
import torch
from basicsr.metrics.metric_util import to_y_channel
from basicsr.metrics.niqe import calculate_niqe, niqe
from skimage import data
from tests.helpers.descent import descend

from finpercep_basicsr.losses.finpercep_global_iqa_loss import FinPercepGlobalIQALoss
from finpercep_basicsr.metrics.niqe_torch import NIQE, pristine_params


def _tensor(rgb_u8):
    return torch.from_numpy(rgb_u8.copy()).permute(2, 0, 1)[None].float().div(255)


def _basicsr(x):
    rgb = (x.detach().clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return calculate_niqe(rgb[:, :, ::-1], 0, input_order='HWC', convert_to='y')  # BasicSR reads BGR


@pytest.mark.parametrize('photo, size', [('astronaut', (288, 384)), ('coffee', (200, 300)), ('chelsea', (192, 193))])
def test_equals_basicsr_niqe_on_real_photos(photo, size):
    rgb = getattr(data, photo)()[:size[0], :size[1]]
    x = _tensor(rgb)
    mu, cov = pristine_params()
    window = np.load(os.path.join(os.path.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))['gaussian_window']
    luma = np.squeeze(to_y_channel(rgb[:, :, ::-1].astype(np.float32))).round().astype(np.float64)
    assert NIQE()(x).item() == pytest.approx(niqe(luma, mu.reshape(1, -1), cov, window), rel=1e-4)
    assert NIQE()(x).item() == pytest.approx(_basicsr(x), rel=5e-3)  # BasicSR's float32 filtering


def test_descending_its_gradient_lowers_basicsr_niqe():
    x0 = _tensor(data.astronaut()[:192, :192])
    assert _basicsr(descend(NIQE(), x0)) < 0.8 * _basicsr(x0)


def test_as_a_reward_it_is_minus_niqe_per_image_and_refuses_small_images():
    x = torch.cat([_tensor(data.astronaut()[:192, :192]), _tensor(data.coffee()[:192, :192])])
    loss = FinPercepGlobalIQALoss(metric='niqe', reduction='none')
    reward, terms = loss.image_rewards(x)
    torch.testing.assert_close(reward, -NIQE()(x))
    assert reward[0] != reward[1]
    with pytest.raises(ValueError, match='at least two 96x96 blocks'):
        loss.image_rewards(torch.rand(1, 3, 96, 96))
