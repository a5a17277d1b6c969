"""Degradations: Real-ESRGAN second order and clean bicubic; shapes, 8-bit output, seeding, options, preset mixes."""
import random

import numpy as np
import pytest
import torch
from skimage import data

from finpercep_basicsr.fgr.degradation import DegradationMix, degrade
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


MIX = {'scale': 4, 'mix': {
    'mild': {'weight': 1, 'opt': {'mode': 'bicubic', 'jpeg_range': [85, 95]}},
    'medium': {'weight': 1, 'opt': {'second_blur_prob': 0, 'resize_prob2': [0, 0, 1], 'gaussian_noise_prob2': 0,
                                    'poisson_scale_range2': [0.05, 0.1], 'noise_range': [1, 5],
                                    'poisson_scale_range': [0.05, 0.5], 'jpeg_range': [70, 95],
                                    'jpeg_range2': [70, 95]}},
    'heavy': {'weight': 2, 'opt': {}},
}}


def test_bicubic_mode_is_a_clean_downscale_with_light_jpeg():
    from basicsr.utils.matlab_functions import imresize
    hr = _hr(64)
    ref = imresize(hr, 0.25)  # (16, 16, 3) numpy, not rounded
    plain = degrade(hr, {'mode': 'bicubic', 'jpeg_prob': 0}, seed=0)
    # no JPEG: exactly the 8-bit rounding of MATLAB bicubic
    np.testing.assert_array_equal(plain, np.round(np.clip(ref, 0, 1) * 255) / 255)
    light = degrade(hr, {'mode': 'bicubic', 'jpeg_range': [85, 95]}, seed=3)
    np.testing.assert_array_equal(light, degrade(hr, {'mode': 'bicubic', 'jpeg_range': [85, 95]}, seed=3))
    assert 0 < np.abs(light - plain).mean() < 0.02
    with pytest.raises(UserInputError, match='degradation.mode'):
        degrade(hr, {'mode': 'nearest'}, seed=0)
    with pytest.raises(UserInputError, match='jpeg_prob'):
        degrade(hr, {'mode': 'bicubic', 'jpeg_prob': 2}, seed=0)


def test_mix_draws_presets_by_weight_and_deterministically():
    mix = DegradationMix(MIX)
    assert mix.mixed and mix.scale == 4 and mix.names == ['heavy', 'medium', 'mild']
    draws = [mix.choose(seed)[0] for seed in range(4000)]
    assert draws == [mix.choose(seed)[0] for seed in range(4000)]
    share = {name: draws.count(name) / len(draws) for name in mix.names}
    assert share['heavy'] == pytest.approx(0.5, abs=0.03)
    assert share['mild'] == pytest.approx(0.25, abs=0.03) and share['medium'] == pytest.approx(0.25, abs=0.03)
    # the shared keys reach every preset; the preset's own keys win
    name, opt = next(mix.choose(s) for s in range(100) if mix.choose(s)[0] == 'mild')
    assert opt == {'scale': 4, 'mode': 'bicubic', 'jpeg_range': [85, 95]}
    # the written order of the presets does not change the draw
    reordered = DegradationMix({'scale': 4, 'mix': dict(reversed(list(MIX['mix'].items())))})
    assert [reordered.choose(s)[0] for s in range(200)] == draws[:200]
    # a plain dict is one preset, no draw (old option files)
    plain = DegradationMix({'scale': 2})
    assert not plain.mixed and plain.choose(5) == ('default', {'scale': 2}) and DegradationMix(None).scale == 4


def test_mild_is_much_closer_to_bicubic_than_heavy():
    from basicsr.utils.matlab_functions import imresize
    hr = _hr(64)
    ref = np.asarray(imresize(hr, 0.25))
    mix = DegradationMix(MIX)
    err = {name: [] for name in mix.names}
    for seed in range(24):
        name, opt = mix.choose(seed)
        err[name].append(np.abs(degrade(hr, opt, seed) - ref).mean())
    mean = {name: float(np.mean(v)) for name, v in err.items()}
    assert all(err.values())
    assert mean['mild'] < 0.02 and mean['heavy'] > 3 * mean['mild']
    assert mean['mild'] < mean['medium'] < mean['heavy']


def test_bad_mixes():
    with pytest.raises(UserInputError, match='degradation.mix: need a mapping'):
        DegradationMix({'mix': []})
    with pytest.raises(UserInputError, match='mix.mild.weight'):
        DegradationMix({'mix': {'mild': {'weight': -1}}})
    with pytest.raises(UserInputError, match=r'mix.mild: need \{weight, opt\}'):
        DegradationMix({'mix': {'mild': {'weigth': 1}}})
    with pytest.raises(UserInputError, match='weights sum to 0'):
        DegradationMix({'mix': {'a': {'weight': 0}, 'b': {'weight': 0}}})
    with pytest.raises(UserInputError, match='preset b: degradation: unknown option'):
        DegradationMix({'mix': {'a': {}, 'b': {'opt': {'jpeg_rang': [1, 2]}}}})
    with pytest.raises(UserInputError, match='same scale'):
        DegradationMix({'mix': {'a': {'opt': {'scale': 2}}, 'b': {'opt': {'scale': 4}}}})
