"""Every packaged ncnn SR model as an x4 SR source: shape, determinism, alignment with GT, exact tiling,
provenance, configurable blob names, and missing model files."""
import dataclasses
import os

import cv2
import numpy as np
import pytest
from skimage import data

from finpercep_basicsr.fgr.sources import ncnn_models
from finpercep_basicsr.fgr.sources.ncnn_models import PACKAGED_MODELS, packaged_ncnn_model
from finpercep_basicsr.fgr.sources import build_sr_source
from finpercep_basicsr.utils.errors import UserInputError

# how each packaged model reaches the FGR scale 4 (x2 models twice, the x3 graph then a bicubic x4/3)
X4_OPTIONS = {name: {'type': 'ncnn', 'model': name} for name in PACKAGED_MODELS}
for _name, _spec in PACKAGED_MODELS.items():
    if _spec.scale == 2:
        X4_OPTIONS[_name]['passes'] = 2
    elif _spec.scale == 3:
        X4_OPTIONS[_name]['scale'] = 4


def _gt_and_lq(size=80):
    """A real photo crop (astronaut: face, hair, badge) and its clean x4 area downscale, float32 RGB [0, 1]."""
    gt = data.astronaut()[100:100 + size, 150:150 + size].astype(np.float32) / 255.0
    return gt, cv2.resize(gt, (size // 4, size // 4), interpolation=cv2.INTER_AREA)


def _best_shift(img, ref, radius=3, margin=8):
    """Integer (dy, dx) that best aligns ``img`` to ``ref`` by normalised cross-correlation of blurred greys."""
    def prep(x):
        return cv2.GaussianBlur(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), (0, 0), 2.0)

    a, b = prep(img), prep(ref)
    h, w = b.shape
    target = b[margin:h - margin, margin:w - margin]
    target = (target - target.mean()) / target.std()
    scores = {}
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            window = a[margin + dy:h - margin + dy, margin + dx:w - margin + dx]
            scores[(dy, dx)] = float(np.mean(target * (window - window.mean()) / window.std()))
    return max(scores, key=scores.get), scores


def test_every_packaged_model_has_its_wheel_files():
    for name, spec in PACKAGED_MODELS.items():
        param, weights, scale = packaged_ncnn_model(name)
        assert scale == spec.scale and os.path.getsize(param) > 0 and os.path.getsize(weights) > 0, name


@pytest.mark.parametrize('name', sorted(X4_OPTIONS))
def test_packaged_model_as_x4_source_is_deterministic_and_aligned(name, one_thread):
    gt, lq = _gt_and_lq()
    src = build_sr_source(X4_OPTIONS[name])
    out = src(lq)
    assert src.scale == 4 and out.shape == gt.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, src(lq.copy()))  # deterministic
    bicubic = cv2.resize(lq, gt.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    shift, scores = _best_shift(out, bicubic)
    assert shift == (0, 0), f'{name} is shifted by {shift} against a bicubic upscale'
    assert _best_shift(out, gt)[0] == (0, 0)
    assert scores[(0, 0)] > 0.9  # the same picture
    assert np.abs(out - bicubic).mean() > 2e-3  # and a model, not an interpolation
    prov = src.provenance
    spec = PACKAGED_MODELS[name]
    assert prov['model'] == name and prov['family'] == spec.family and prov['type'] == 'ncnn'
    assert prov['wheel'].startswith(spec.wheel + '==') and not prov['wheel'].endswith('unknown')
    assert prov['param'].endswith(os.path.basename(spec.param)) and prov['model_scale'] == spec.scale
    assert prov['passes'] == X4_OPTIONS[name].get('passes', 1)
    assert prov['final_resize'] == ('bicubic x3->x4' if spec.scale == 3 else None)


@pytest.mark.parametrize('name', ['realesr-animevideov3-x4', 'realesr-animevideov3-x2', 'realesr-animevideov3-x3',
                                  'waifu2x-photo-noise1-x2'])
def test_finite_receptive_field_models_tile_exactly(name, one_thread):
    """With the model's default tile_pad (its receptive radius) tiles equal the whole-image run (one pass)."""
    lq = _gt_and_lq(128)[1]  # 32x32: 3x3 tiles of 12
    opt = {'type': 'ncnn', 'model': name}
    whole = build_sr_source({**opt, 'tile': 0})(lq)
    src = build_sr_source({**opt, 'tile': 12})
    assert src.tile_pad == PACKAGED_MODELS[name].tile_pad
    np.testing.assert_allclose(src(lq), whole, atol=2e-5)
    short = build_sr_source({**opt, 'tile': 12, 'tile_pad': src.tile_pad - 2})(lq)
    assert np.abs(short - whole).max() > 2e-5  # the default is needed: a smaller context shows seams


def test_user_files_with_their_own_blob_names_and_padding(tmp_path):
    """waifu2x's files given by path need their blob names and prepadding; they then match the packaged model."""
    param, weights, _ = packaged_ncnn_model('waifu2x-photo-noise0-x2')
    lq = _gt_and_lq(64)[1]
    packaged = build_sr_source({'type': 'ncnn', 'model': 'waifu2x-photo-noise0-x2'})(lq)
    own = build_sr_source({'type': 'ncnn', 'param_path': param, 'bin_path': weights, 'model_scale': 2,
                           'input_name': 'Input1', 'output_name': 'Eltwise4', 'prepadding': 7})
    np.testing.assert_array_equal(own(lq), packaged)
    assert own.scale == 2 and len(own.provenance['bin_sha256']) == 64
    with pytest.raises(UserInputError, match="no blob 'data'"):
        build_sr_source({'type': 'ncnn', 'param_path': param, 'bin_path': weights, 'model_scale': 2})


def test_missing_wheel_model_file_names_the_file(monkeypatch):
    spec = PACKAGED_MODELS['realesr-animevideov3-x4']
    monkeypatch.setitem(PACKAGED_MODELS, 'realesr-animevideov3-x4', dataclasses.replace(spec, bin='models/gone.bin'))
    with pytest.raises(UserInputError, match='gone.bin'):
        build_sr_source({'type': 'ncnn', 'model': 'realesr-animevideov3-x4'})
    monkeypatch.setitem(PACKAGED_MODELS, 'realesr-animevideov3-x4',
                        dataclasses.replace(spec, package='no_such_sr_wheel'))
    with pytest.raises(UserInputError, match='pip install no-such-sr-wheel'):
        ncnn_models.NcnnNet.packaged('realesr-animevideov3-x4')


def test_bad_ncnn_source_options():
    with pytest.raises(UserInputError, match='unknown packaged ncnn model'):
        build_sr_source({'type': 'ncnn', 'model': 'waifu2x-cunet'})
    with pytest.raises(UserInputError, match='give model'):
        build_sr_source({'type': 'ncnn'})
    with pytest.raises(UserInputError, match='passes'):
        build_sr_source({'type': 'ncnn', 'model': 'waifu2x-photo-x2', 'passes': 0})
    with pytest.raises(UserInputError, match='model is fixed'):
        build_sr_source({'type': 'realesrgan_ncnn', 'model': 'realesrgan-x4plus-anime'})
    # a wrong scale is caught where it matters: the output shape check of every source
    src = build_sr_source({'type': 'ncnn', 'model': 'waifu2x-photo-x2', 'passes': 2, 'scale': 3})
    assert src(np.zeros((8, 8, 3), np.float32)).shape == (24, 24, 3)  # x4 then an area resize to x3
