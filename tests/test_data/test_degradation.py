"""Real-ESRGAN second-order degradation: shapes, 8-bit output, seeding, option handling."""
import random

import numpy as np
import pytest
import torch
from skimage import data

from finpercep_basicsr.fgr.degradation import degrade
from finpercep_basicsr.utils.errors import UserInputError

# every random step switched to (almost) identity: only the resize to LR size and JPEG at quality 99 remain
CLEAN = {
    'gt_usm': False, 'kernel_range': [7, 7], 'kernel_list': ['iso'], 'kernel_prob': [1], 'kernel_list2': ['iso'],
    'kernel_prob2': [1], 'blur_sigma': [0.1, 0.11], 'blur_sigma2': [0.1, 0.11], 'sinc_prob': 0, 'sinc_prob2': 0,
    'resize_prob': [0, 0, 1], 'resize_prob2': [0, 0, 1], 'gaussian_noise_prob': 1, 'gaussian_noise_prob2': 1,
    'noise_range': [0, 0], 'noise_range2': [0, 0], 'jpeg_range': [99, 99], 'jpeg_range2': [99, 99],
    'second_blur_prob': 0, 'final_sinc_prob': 0,
}


def _hr(size=64):
    return np.ascontiguousarray(data.astronaut()[100:100 + size, 180:180 + size]).astype(np.float32) / 255.0


def test_shape_range_and_8bit_grid():
    lq = degrade(_hr(64), {'scale': 4}, seed=1)
    assert lq.shape == (16, 16, 3) and lq.dtype == np.float32
    assert 0 <= lq.min() and lq.max() <= 1
    np.testing.assert_allclose(lq * 255, np.round(lq * 255), atol=1e-4)
    assert degrade(_hr(64), {'scale': 2}, seed=1).shape == (32, 32, 3)


def test_same_seed_same_result_and_callers_rng_untouched():
    hr = _hr(64)
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    expected = np.random.rand(), random.random(), torch.rand(1).item()
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    a = degrade(hr, {}, seed=7)
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == expected
    b = degrade(hr, {}, seed=7)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - degrade(hr, {}, seed=8)).mean() > 1e-3


def test_options_reach_the_pipeline():
    """Near-identity options give a plain downscale; the Real-ESRGAN defaults degrade much more."""
    hr = _hr(64)
    ref = torch.nn.functional.interpolate(torch.from_numpy(hr.transpose(2, 0, 1))[None], size=(16, 16),
                                          mode='area')[0].numpy().transpose(1, 2, 0)
    clean = [np.abs(degrade(hr, CLEAN, seed=s) - ref).mean() for s in range(2)]
    default = [np.abs(degrade(hr, {}, seed=s) - ref).mean() for s in range(2)]
    assert max(clean) < 0.03
    assert np.mean(default) > 2 * np.mean(clean)


def test_tiny_crops_work():
    # 32 px at scale 4 is an 8 px LR image: smaller than half the 21 px kernels
    lq = degrade(_hr(32), {}, seed=3)
    assert lq.shape == (8, 8, 3) and np.isfinite(lq).all()


def test_bad_input():
    with pytest.raises(UserInputError, match='divisible'):
        degrade(_hr(30), {'scale': 4}, seed=0)
    with pytest.raises(UserInputError, match='jpeg_rang'):
        degrade(_hr(32), {'jpeg_rang': [10, 20]}, seed=0)
    with pytest.raises(UserInputError, match='kernel_list'):
        degrade(_hr(32), {'kernel_list': ['iso', 'aniso'], 'kernel_prob': [1]}, seed=0)
    with pytest.raises(UserInputError, match='jpeg_range2'):
        degrade(_hr(32), {'jpeg_range2': [90, 100]}, seed=0)
    with pytest.raises(UserInputError, match='blur_sigma2'):
        degrade(_hr(32), {'blur_sigma2': [1, 1]}, seed=0)
    with pytest.raises(ValueError, match='RGB'):
        degrade(np.zeros((32, 32), np.float32), {}, seed=0)
