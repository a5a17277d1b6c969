"""Region swap and PDM labels: ranges, zero outside the mask, D_feat really from the pretrained backbone."""
import cv2
import numpy as np
import pytest
import torch
from skimage import data

from finpercep_basicsr.fgr.labels import FeatureDistance, LabelMaker, normalize_distance, quantize8, region_swap
from finpercep_basicsr.utils.errors import UserInputError


def _real_pair(name, size=64):
    """An HR crop of a real photo and a bicubic x4 SR of its downscaled copy."""
    img = getattr(data, name)()
    gt = cv2.resize(img[:min(img.shape[:2]), :min(img.shape[:2])], (size, size), interpolation=cv2.INTER_AREA)
    gt = gt.astype(np.float32) / 255
    lq = cv2.resize(gt, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
    return np.clip(cv2.resize(lq, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1), gt


def _tiny_pair(size=32, seed=0):
    rng = np.random.default_rng(seed)
    gt = cv2.resize(rng.random((size // 4, size // 4, 3)).astype(np.float32), (size, size))
    sr = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)
    return sr, gt


def _mask(size=64):
    mask = np.zeros((size, size), np.float32)
    mask[size // 4:size * 3 // 4, size // 8:size // 2] = 1
    return mask


@pytest.fixture(scope='module')
def maker():
    torch.set_num_threads(1)
    return LabelMaker({'alpha': 0.5})


@pytest.mark.parametrize('pair', ['tiny', 'astronaut', 'coffee'])
def test_label_shapes_ranges_and_zero_outside_mask(maker, pair):
    sr, gt = _tiny_pair(64) if pair == 'tiny' else _real_pair(pair)
    mask = _mask()
    out = maker(sr, gt, mask)
    for key in ('sr', 'gt', 'syn'):
        assert out[key].shape == (64, 64, 3) and out[key].dtype == np.float32
        # what the label describes is exactly what an 8-bit PNG stores
        assert np.array_equal(out[key], quantize8(out[key]))
    assert out['pdm'].shape == (64, 64) and out['pdm'].dtype == np.float32
    assert out['pdm'].min() >= 0 and out['pdm'].max() <= 1 and out['pdm'].max() > 0.5
    assert np.all(out['pdm'][mask == 0] == 0)
    assert np.array_equal(out['syn'][mask == 0], out['gt'][mask == 0])
    assert np.array_equal(out['syn'][mask == 1], out['sr'][mask == 1])
    stats = out['stats']
    assert stats['mask_area'] == pytest.approx(mask.mean())
    assert 0 < stats['pdm_mean'] < stats['pdm_mean_in_mask'] <= 1


def test_region_swap_formula():
    sr, gt = _tiny_pair()
    mask = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    syn = region_swap(sr, gt, mask)
    np.testing.assert_allclose(syn, mask[..., None] * sr + (1 - mask[..., None]) * gt, atol=1e-6)


def test_feature_term_changes_the_label(maker):
    sr, gt = _real_pair('astronaut')
    mask = _mask()
    mixed = maker(sr, gt, mask)['pdm']
    pixel = LabelMaker({'alpha': 1.0})(sr, gt, mask)['pdm']
    assert LabelMaker({'alpha': 1.0}).feature is None
    assert np.abs(mixed - pixel)[mask == 1].mean() > 0.05


def test_feature_distance_comes_from_the_pretrained_backbone():
    torch.manual_seed(0)
    sr, gt = _real_pair('coffee')
    soft = cv2.GaussianBlur(gt, (0, 0), 0.7)
    hard = cv2.GaussianBlur(gt, (0, 0), 2.5)
    pretrained = FeatureDistance('efficientnet-lite0', pretrained=True, levels=[0, 1])
    random_init = FeatureDistance('efficientnet-lite0', pretrained=False, levels=[0, 1])
    d_pre = pretrained([sr, soft, hard, gt], gt)
    d_rand = random_init([sr], gt)[0]
    assert d_pre[0].shape == (64, 64) and d_pre[0].dtype == np.float32
    assert np.abs(d_pre[3]).max() < 1e-5  # identical images: zero distance
    assert d_pre[1].mean() < d_pre[2].mean()  # more blur, further in feature space
    assert np.abs(d_pre[0] - d_rand).mean() > 0.02
    assert np.corrcoef(d_pre[0].ravel(), d_rand.ravel())[0, 1] < 0.99
    with pytest.raises(UserInputError, match='levels'):
        FeatureDistance('efficientnet-lite0', pretrained=False, levels=[4])


def test_normalisation_types():
    dist = np.linspace(0, 0.8, 100, dtype=np.float32).reshape(10, 10)
    mask = np.zeros((10, 10), np.float32)
    mask[:5] = 1
    by_max, scale = normalize_distance(dist, mask, {'type': 'max'})
    assert by_max.max() == pytest.approx(1.0) and scale == pytest.approx(dist[:5].max())
    fixed, scale = normalize_distance(dist, mask, {'type': 'fixed', 'scale': 0.2})
    np.testing.assert_allclose(fixed[:5], np.clip(dist[:5] / 0.2, 0, 1))
    assert scale == 0.2 and np.all(fixed[5:] == 0)
    pct, scale = normalize_distance(dist, mask, {'type': 'percentile', 'percentile': 50})
    assert scale == pytest.approx(np.percentile(dist[:5], 50)) and (pct[:5] == 1).mean() == pytest.approx(0.5, abs=0.05)
    # a near-perfect swap is not stretched to full strength
    floored, _ = normalize_distance(dist * 0.01, mask, {'type': 'max', 'min_scale': 0.1})
    assert floored.max() < 0.1
    with pytest.raises(UserInputError, match='normalize.type'):
        normalize_distance(dist, mask, {'type': 'zscore'})
    with pytest.raises(UserInputError, match='alpha'):
        LabelMaker({'alpha': 1.5})


def test_pixel_only_ordering_gt_syn_sr():
    sr, gt = _real_pair('astronaut')
    stats = LabelMaker({'alpha': 1.0, 'normalize': {'type': 'fixed', 'scale': 0.2}})(sr, gt, _mask())['stats']
    assert 0 < stats['pdm_mean'] < stats['sr_score']


def _binary_mask(size=64, seed=3):
    """A ragged binary mask (a rectangle plus random pixels), so the check is not only on a clean edge."""
    mask = _mask(size)
    mask[np.random.default_rng(seed).random((size, size)) < 0.1] = 1
    return mask


def test_pixel_label_is_the_formula_exactly():
    """alpha 1, fixed scale s: M_gt = clip(mean_c |syn - gt| / s, 0, 1) * mask, bit for bit."""
    sr, gt = _real_pair('astronaut')
    mask, s = _binary_mask(), 0.07
    out = LabelMaker({'alpha': 1.0, 'normalize': {'type': 'fixed', 'scale': s}})(sr, gt, mask)
    q_sr, q_gt = quantize8(sr), quantize8(gt)
    syn = np.where(mask[..., None] == 1, q_sr, q_gt)
    np.testing.assert_array_equal(out['syn'], syn)
    expected = np.clip(np.abs(syn - q_gt).mean(axis=2) / s, 0, 1) * mask
    np.testing.assert_array_equal(out['pdm'], expected.astype(np.float32))
    # the scale matters: some pixels saturate at 1, many stay below
    assert 0 < (out['pdm'][mask == 1] == 1).mean() < 0.9 and out['stats']['label_scale'] == s
    assert out['stats']['sr_score'] == pytest.approx(float(np.clip(np.abs(q_sr - q_gt).mean(axis=2) / s, 0, 1).mean()),
                                                     abs=1e-6)


def test_a_swap_into_another_image_labels_the_base_against_gt_too():
    """base: syn = mask ? SR : base, and the label is clip(mean_c |syn - gt| / s, 0, 1) everywhere, base included."""
    sr, gt = _real_pair('astronaut')
    base = cv2.GaussianBlur(gt, (0, 0), 1.5)
    mask, s = _binary_mask(), 0.07
    maker = LabelMaker({'alpha': 1.0, 'normalize': {'type': 'fixed', 'scale': s}})
    out = maker(sr, gt, mask, base=base)
    syn = np.where(mask[..., None] == 1, quantize8(sr), quantize8(base))
    np.testing.assert_array_equal(out['syn'], syn)
    expected = np.clip(np.abs(syn - quantize8(gt)).mean(axis=2) / s, 0, 1)
    np.testing.assert_array_equal(out['pdm'], expected.astype(np.float32))
    # the blurred base's own error is labelled outside the swap, unlike a swap into the GT
    assert out['pdm'][mask == 0].mean() > 0.05
    assert (maker(sr, gt, mask)['pdm'][mask == 0] == 0).all()
    assert out['stats']['pdm_mean_in_mask'] == pytest.approx(float(out['pdm'][mask == 1].mean()), abs=1e-6)


def test_mixed_label_is_built_from_the_feature_distance(one_thread):
    """alpha 0.5, fixed s: M_gt = clip((0.5 D_pixel + 0.5 D_feat) / s, 0, 1) * mask with D_feat computed here."""
    sr, gt = _real_pair('coffee')
    mask, s = _binary_mask(seed=4), 0.25
    opt = {'alpha': 0.5, 'normalize': {'type': 'fixed', 'scale': s},
           'features': {'backbone': 'efficientnet-lite0', 'pretrained': True, 'levels': [0, 1]}}
    out = LabelMaker(opt)(sr, gt, mask)
    q_sr, q_gt = quantize8(sr), quantize8(gt)
    syn = np.where(mask[..., None] == 1, q_sr, q_gt)
    d_feat = FeatureDistance('efficientnet-lite0', pretrained=True, levels=[0, 1])([syn, q_sr], q_gt)[0]
    d_pixel = np.abs(syn - q_gt).mean(axis=2)
    expected = np.clip((0.5 * d_pixel + 0.5 * d_feat) / s, 0, 1) * mask
    np.testing.assert_allclose(out['pdm'], expected, atol=1e-6)
    # the feature term is really in it: the pixel-only formula is far off
    pixel_only = np.clip(d_pixel / s, 0, 1) * mask
    assert np.abs(out['pdm'] - pixel_only)[mask == 1].mean() > 0.05
    assert np.all(out['pdm'][mask == 0] == 0)
