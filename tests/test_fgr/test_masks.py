"""Swap-mask families: binary, seeded, coverage in range, superpixel/SAM masks follow their regions."""
import cv2
import numpy as np
import pytest
from skimage import data
from skimage.segmentation import slic

from finpercep_basicsr.fgr.masks import (MASK_KINDS, MIN_COVERAGE, available_kinds, choose_kind, kind_options,
                                         make_mask)
from finpercep_basicsr.utils.errors import UserInputError

SHAPE = (64, 80)


def _photo():
    img = cv2.resize(data.astronaut()[:256, 128:448], SHAPE[::-1], interpolation=cv2.INTER_AREA)
    return img.astype(np.float32) / 255


@pytest.mark.parametrize('kind', ['blobs', 'rect', 'brush', 'segments'])
def test_mask_is_binary_seeded_and_covers_the_requested_range(kind):
    opt = kind_options({'coverage': [0.2, 0.4]}, kind)
    image = _photo()
    masks = [make_mask(kind, SHAPE, np.random.default_rng(seed), image=image, opt=opt) for seed in range(6)]
    for m in masks:
        assert m.shape == SHAPE and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
        # blobs hit the target exactly; the shape-based families may overshoot by one region/stroke
        assert 0.2 * 0.8 <= m.mean() <= 0.4 * 1.6, (kind, m.mean())
    again = make_mask(kind, SHAPE, np.random.default_rng(0), image=image, opt=opt)
    assert np.array_equal(again, masks[0])
    assert len({m.tobytes() for m in masks}) == len(masks)


def test_segment_mask_is_a_union_of_superpixels():
    image = _photo()
    opt = kind_options({'kinds': {'segments': {'n_segments': 24}}}, 'segments')
    mask = make_mask('segments', SHAPE, np.random.default_rng(3), image=image, opt=opt)
    labels = slic(image, n_segments=24, compactness=10.0, start_label=0, channel_axis=-1)
    for lab in np.unique(labels):
        values = np.unique(mask[labels == lab])
        assert len(values) == 1, f'superpixel {lab} is split by the mask'


def test_felzenszwalb_segments_and_missing_image():
    opt = kind_options({'kinds': {'segments': {'method': 'felzenszwalb', 'min_size': 30}}}, 'segments')
    mask = make_mask('segments', SHAPE, np.random.default_rng(0), image=_photo(), opt=opt)
    assert mask.mean() >= MIN_COVERAGE
    with pytest.raises(ValueError, match='needs the image'):
        make_mask('segments', SHAPE, np.random.default_rng(0), image=None, opt=opt)
    with pytest.raises(UserInputError, match='slic or felzenszwalb'):
        make_mask('segments', SHAPE, np.random.default_rng(0), image=_photo(), opt={'method': 'kmeans'})


def test_sam_masks_are_cropped_to_the_box_and_followed(tmp_path):
    photo = str(tmp_path / 'photos' / 'street.png')
    sam_dir = tmp_path / 'sam' / 'street'
    sam_dir.mkdir(parents=True)
    full = np.zeros((100, 120), np.uint8)
    seg_a, seg_b = full.copy(), full.copy()
    seg_a[10:60, 20:70] = 255
    seg_b[50:95, 60:115] = 255
    cv2.imwrite(str(sam_dir / 'a.png'), seg_a)
    cv2.imwrite(str(sam_dir / 'b.png'), seg_b)
    masks_opt = {'kinds': {'sam': {'dir': str(tmp_path / 'sam')}, 'rect': {'weight': 0}}}
    assert available_kinds(masks_opt, photo) == ['sam']
    assert available_kinds(masks_opt, str(tmp_path / 'other.png')) == []
    box = (20, 30, 64, 80)
    regions = np.zeros((100, 120), np.int32)
    regions[seg_a > 0] = 1
    regions[seg_b > 0] = 2
    regions = regions[20:84, 30:110]
    seen = set()
    for seed in range(8):
        mask = make_mask('sam', SHAPE, np.random.default_rng(seed), opt=kind_options(masks_opt, 'sam'), photo=photo,
                         box=box)
        for lab in range(3):
            assert len(np.unique(mask[regions == lab])) == 1, f'SAM region {lab} split (seed {seed})'
        seen.add(mask.tobytes())
    assert len(seen) > 1
    with pytest.raises(UserInputError, match='does not cover crop box'):
        make_mask('sam', SHAPE, np.random.default_rng(0), opt=kind_options(masks_opt, 'sam'), photo=photo,
                  box=(60, 60, 64, 80))


def test_kind_choice_follows_weights_and_rejects_unknown_kinds():
    rng = np.random.default_rng(0)
    masks_opt = {'kinds': {'blobs': {'weight': 3}, 'rect': {'weight': 1}, 'brush': {'weight': 0}}}
    picks = [choose_kind(masks_opt, rng) for _ in range(400)]
    assert 'brush' not in picks
    assert 0.6 < picks.count('blobs') / len(picks) < 0.9
    with pytest.raises(UserInputError, match='unknown mask kind'):
        choose_kind({'kinds': {'ellipse': {}}}, rng)
    with pytest.raises(UserInputError, match='unknown mask kind'):
        make_mask('ellipse', SHAPE, rng)
    with pytest.raises(UserInputError, match='coverage'):
        make_mask('blobs', SHAPE, rng, opt={'coverage': [0.6, 0.2]})
    assert set(MASK_KINDS) == {'blobs', 'rect', 'brush', 'segments', 'sam'}
