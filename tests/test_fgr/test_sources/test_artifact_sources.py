"""Synthetic artifact SR sources: seeded, aligned with the base, sharpening where they claim to, strength ordered."""
import cv2
import numpy as np
import pytest
from skimage import data

from finpercep_basicsr.fgr.sources import build_sr_source
from finpercep_basicsr.fgr.sources.artifact_sources import artifact_types
from finpercep_basicsr.utils.errors import UserInputError

# every family, and every mode/style of the families that draw one per call
CASES = [
    ('artifact_oversharpen', {}),
    ('artifact_ringing', {'modes': ['halo']}),
    ('artifact_ringing', {'modes': ['gibbs']}),
    ('artifact_noise', {}),
    ('artifact_texture', {'modes': ['fibers']}),
    ('artifact_texture', {'modes': ['maze']}),
    ('artifact_texture', {'modes': ['checker']}),
    ('artifact_blocking', {'modes': ['jpeg']}),
    ('artifact_blocking', {'modes': ['dct'], 'block': [8]}),
    ('artifact_color', {}),
    ('artifact_painterly', {'styles': ['detail']}),
    ('artifact_painterly', {'styles': ['stylize']}),
    ('artifact_painterly', {'styles': ['kuwahara']}),
    ('artifact_painterly', {'styles': ['etch']}),
]
SHARPENING = ('artifact_oversharpen', 'artifact_ringing', 'artifact_noise', 'artifact_texture', 'artifact_painterly')
IDS = [f'{kind[len("artifact_"):]}-{(extra.get("modes") or extra.get("styles") or ["all"])[0]}'
       for kind, extra in CASES]


def _lq(top=40, left=60, size=40):
    """An LR photo (astronaut, area-downscaled x4 from a 4*size crop) as float32 RGB in [0, 1]."""
    hr = data.astronaut()[top:top + 4 * size, left:left + 4 * size].astype(np.float32) / 255.0
    return cv2.resize(hr, (size, size), interpolation=cv2.INTER_AREA)


def _source(kind, extra, strength=None, seed=0):
    opt = {'type': kind, 'seed': seed, **extra}
    if strength is not None:
        opt['strength'] = [strength, strength]
    return build_sr_source(opt)


def _gray_lowpass(img, sigma=3.0):
    return cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (0, 0), sigma)


def _best_shift(out, ref, max_shift=3):
    """Integer (dy, dx) maximising the normalised cross-correlation of the low-passed luminances."""
    a, b = _gray_lowpass(out), _gray_lowpass(ref)
    m = max_shift
    core = b[2 * m:-2 * m, 2 * m:-2 * m]
    core = (core - core.mean()) / core.std()
    scores = {}
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            win = a[2 * m + dy:a.shape[0] - 2 * m + dy, 2 * m + dx:a.shape[1] - 2 * m + dx]
            scores[dy, dx] = float(np.mean(core * (win - win.mean()) / win.std()))
    return max(scores, key=scores.get)


def _laplacian_energy(img):
    return float(np.mean(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_32F) ** 2))


def test_every_family_is_registered_and_covered():
    assert {kind for kind, _ in CASES} == set(artifact_types())


@pytest.mark.parametrize('kind, extra', CASES, ids=IDS)
def test_shape_range_and_seeded_determinism(kind, extra):
    lq = _lq()
    out = _source(kind, extra)(lq)
    assert out.shape == (160, 160, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(_source(kind, extra)(lq), out)  # a rebuild gives the same output
    assert not np.array_equal(_source(kind, extra, seed=1)(lq), out)


@pytest.mark.parametrize('kind, extra', CASES, ids=IDS)
def test_aligned_with_the_base_and_keeps_its_low_frequencies(kind, extra):
    for top, left, seed in ((40, 60, 0), (120, 200, 1)):
        lq = _lq(top, left)
        base = build_sr_source({'type': 'bicubic', 'scale': 4})(lq)
        out = _source(kind, extra, strength=1.0, seed=seed)(lq)
        assert _best_shift(out, base) == (0, 0)
        # an artifact, not another picture: the 8 px low-pass (of the luminance: colour blotches are the point of
        # artifact_color) stays close to the base's
        low = np.abs(_gray_lowpass(out, 8) - _gray_lowpass(base, 8)).mean()
        assert low < 0.03, f'{kind}: low-pass luminance moved by {low:.3f}'


def test_the_alignment_check_sees_a_shift():
    base = build_sr_source({'type': 'bicubic', 'scale': 4})(_lq())
    moved = np.ascontiguousarray(np.roll(base, (2, -1), axis=(0, 1)))
    assert _best_shift(moved, base) == (2, -1)


@pytest.mark.parametrize('kind, extra', CASES, ids=IDS)
def test_stronger_means_further_from_the_base(kind, extra):
    lq = _lq()
    base = build_sr_source({'type': 'bicubic', 'scale': 4})(lq)
    change = [float(np.abs(_source(kind, extra, strength=s)(lq) - base).mean()) for s in (0.0, 0.25, 0.5, 1.0)]
    assert change[0] == 0, change  # strength 0 is the base
    assert change[1] < change[2] < change[3], change
    if kind in SHARPENING:  # the families meant to catch "sharper is better" must add fine-scale energy
        energy = [_laplacian_energy(_source(kind, extra, strength=s)(lq)) for s in (0.25, 1.0)]
        assert _laplacian_energy(base) * 1.2 < energy[0] < energy[1], (kind, extra, energy)


def test_strength_differs_between_crops_and_base_sets_the_scale():
    src = build_sr_source({'type': 'artifact_noise', 'seed': 3})
    draws = {float(src.rng(_lq(top=t)).uniform()) for t in (0, 40, 80)}
    assert len(draws) == 3
    two = build_sr_source({'type': 'artifact_oversharpen', 'base': {'type': 'lanczos', 'scale': 2}})
    assert two.scale == 2 and two(_lq()).shape == (80, 80, 3)


@pytest.mark.parametrize('opt, match', [
    ({'type': 'artifact_oversharpen', 'amount': 3}, 'amount'),
    ({'type': 'artifact_ringing', 'strength': [1.0, 0.5]}, 'strength'),
    ({'type': 'artifact_noise', 'strength': 0.5}, 'strength'),
    ({'type': 'artifact_texture', 'modes': ['plaid']}, 'modes'),
    ({'type': 'artifact_painterly', 'styles': []}, 'styles'),
    ({'type': 'artifact_blocking', 'block': [1]}, 'block'),
    ({'type': 'artifact_color', 'base': 'bicubic'}, 'base'),
    ({'type': 'artifact_color', 'base': {'type': 'bicubic', 'sharpness': 2}}, 'sharpness'),
    ({'type': 'artifact_ringing', 'cutoff': [0.5, 2.0]}, 'cutoff'),
])
def test_bad_options_are_user_errors(opt, match):
    with pytest.raises(UserInputError, match=match):
        build_sr_source(opt)
