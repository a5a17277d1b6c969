"""Swap masks for FGR region swapping: random blobs, rectangles, brush strokes, superpixels, SAM masks.

Every family is seeded by the ``numpy.random.Generator`` it receives, returns a binary float32
(H, W) map (1 = region taken from the SR image) and aims at a coverage fraction drawn from the
``coverage`` range of its options. Families are looked up by name in ``MASK_KINDS``.

Options (YAML, under ``masks``)::

    coverage: [0.1, 0.5]                 # default fraction range for every kind
    kinds:
      blobs: {weight: 1, sigma: [0.03, 0.12]}
      rect: {weight: 1, max_count: 4}
      brush: {weight: 1, width: [0.02, 0.07], max_strokes: 12}
      segments: {weight: 2, method: slic, n_segments: 48, compactness: 10}
      sam: {weight: 2, dir: /path/to/sam_masks}   # optional; kind unavailable without masks
"""
import glob
import os

import cv2
import numpy as np

from finpercep_basicsr.utils.errors import UserInputError

DEFAULT_COVERAGE = (0.1, 0.5)
# a mask must hold at least this fraction so the label has something to say
MIN_COVERAGE = 0.01


def _coverage_target(rng, opt):
    low, high = opt.get('coverage', DEFAULT_COVERAGE)
    if not 0 < low <= high <= 1:
        raise UserInputError(f'masks coverage must satisfy 0 < low <= high <= 1, got {[low, high]}')
    return float(rng.uniform(low, high))


def _uniform(rng, bounds):
    low, high = bounds
    return float(rng.uniform(low, high))


def blob_mask(shape, rng, opt, **_):
    """Smooth random blobs: low-pass white noise thresholded at the quantile that gives the target coverage."""
    h, w = shape
    target = _coverage_target(rng, opt)
    sigma = _uniform(rng, opt.get('sigma', (0.03, 0.12))) * max(h, w)
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma,
                             borderType=cv2.BORDER_REFLECT)
    # thresholding at the (1 - target) quantile hits the coverage exactly, whatever the blob scale
    return (noise > np.quantile(noise, 1.0 - target)).astype(np.float32)


def rect_mask(shape, rng, opt, **_):
    """Up to ``max_count`` axis-aligned rectangles, added until the target coverage is reached."""
    h, w = shape
    target = _coverage_target(rng, opt)
    count = int(rng.integers(1, int(opt.get('max_count', 4)) + 1))
    mask = np.zeros((h, w), np.float32)
    area_each = target / count
    for _ in range(count * 4):
        if mask.mean() >= target:
            break
        aspect = np.exp(rng.uniform(-0.8, 0.8))
        rh = int(np.clip(round(np.sqrt(area_each * h * w * aspect)), 1, h))
        rw = int(np.clip(round(np.sqrt(area_each * h * w / aspect)), 1, w))
        top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        mask[top:top + rh, left:left + rw] = 1
    return mask


def brush_mask(shape, rng, opt, **_):
    """Free-form brush strokes (random-walk polylines with round caps) until the target coverage."""
    h, w = shape
    target = _coverage_target(rng, opt)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(opt.get('max_strokes', 12))):
        if mask.mean() / 255.0 >= target:
            break
        width = max(1, round(_uniform(rng, opt.get('width', (0.02, 0.07))) * max(h, w)))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(3, 9))):
            angle += rng.uniform(-1.2, 1.2)
            length = rng.uniform(0.05, 0.25) * max(h, w)
            nx = float(np.clip(x + length * np.cos(angle), 0, w - 1))
            ny = float(np.clip(y + length * np.sin(angle), 0, h - 1))
            cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 255, width, lineType=cv2.LINE_8)
            x, y = nx, ny
    return (mask > 0).astype(np.float32)


def _pick_regions(labels, rng, target):
    """Union of randomly ordered regions of a label image until the coverage reaches ``target``."""
    ids, counts = np.unique(labels, return_counts=True)
    order = rng.permutation(len(ids))
    total = labels.size
    chosen, area = [], 0
    for i in order:
        # skip a region that would overshoot a lot, unless nothing is chosen yet
        if chosen and (area + counts[i]) / total > target * 1.5:
            continue
        chosen.append(ids[i])
        area += counts[i]
        if area / total >= target:
            break
    return np.isin(labels, chosen).astype(np.float32)


def segment_mask(shape, rng, opt, image=None, **_):
    """Semantic-ish segments: SLIC or Felzenszwalb superpixels of the image, a random subset of them."""
    from skimage.segmentation import felzenszwalb, slic
    if image is None:
        raise ValueError('mask kind "segments" needs the image')
    target = _coverage_target(rng, opt)
    method = opt.get('method', 'slic')
    if method == 'slic':
        labels = slic(image, n_segments=int(opt.get('n_segments', 48)), compactness=float(opt.get('compactness', 10)),
                      start_label=0, channel_axis=-1)
    elif method == 'felzenszwalb':
        labels = felzenszwalb(image, scale=float(opt.get('scale', 100)), sigma=float(opt.get('sigma', 0.8)),
                              min_size=int(opt.get('min_size', 50)), channel_axis=-1)
    else:
        raise UserInputError(f'masks.kinds.segments.method must be slic or felzenszwalb, got {method!r}')
    assert labels.shape == tuple(shape)
    return _pick_regions(labels, rng, target)


def sam_mask_files(sam_dir, photo):
    """SAM mask PNGs of a photo: ``<sam_dir>/<photo stem>/*.png`` or ``<sam_dir>/<photo stem>_*.png``."""
    if not sam_dir or not photo:
        return []
    stem = os.path.splitext(os.path.basename(photo))[0]
    files = glob.glob(os.path.join(glob.escape(sam_dir), glob.escape(stem), '*.png'))
    files += glob.glob(os.path.join(glob.escape(sam_dir), glob.escape(stem) + '_*.png'))
    return sorted(files)


def sam_mask(shape, rng, opt, photo=None, box=None, **_):
    """User-supplied SAM masks of the whole photo, cropped to the crop box; a random subset of them.

    Args:
        photo (str): The source photo path (its stem finds the masks).
        box (tuple[int]): (top, left, height, width) of the crop in the photo.
    """
    files = sam_mask_files(opt.get('dir'), photo)
    if not files:
        raise ValueError(f'no SAM masks for {photo} in {opt.get("dir")}')
    top, left, ch, cw = box if box is not None else (0, 0) + tuple(shape)
    labels = np.zeros(tuple(shape), np.int32)
    # later masks paint over earlier ones: each pixel gets the id of one SAM segment
    for idx, path in enumerate(files, start=1):
        seg = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if seg is None:
            raise UserInputError(f'cannot read SAM mask {path}')
        crop = seg[top:top + ch, left:left + cw]
        if crop.shape != tuple(shape):
            raise UserInputError(f'SAM mask {path} ({seg.shape}) does not cover crop box {box} of {photo}')
        labels[crop > 127] = idx
    target = _coverage_target(rng, opt)
    # background (id 0) is a region too, so a crop with one visible segment still has a choice
    return _pick_regions(labels, rng, target)


MASK_KINDS = {
    'blobs': blob_mask,
    'rect': rect_mask,
    'brush': brush_mask,
    'segments': segment_mask,
    'sam': sam_mask,
}


def kind_options(masks_opt, kind):
    """Options of one kind, with the family-wide ``coverage`` as default."""
    opt = dict((masks_opt.get('kinds') or {}).get(kind) or {})
    opt.setdefault('coverage', masks_opt.get('coverage', DEFAULT_COVERAGE))
    return opt


def available_kinds(masks_opt, photo=None):
    """Kinds with a positive weight that can be made for this photo (``sam`` needs mask files)."""
    kinds = masks_opt.get('kinds') or {name: {} for name in ('blobs', 'rect', 'brush', 'segments')}
    out = []
    # sorted: the draw must not depend on the key order of the YAML mapping
    for kind in sorted(kinds):
        if kind not in MASK_KINDS:
            raise UserInputError(f'masks.kinds: unknown mask kind {kind!r}; choose from {sorted(MASK_KINDS)}')
        opt = kind_options(masks_opt, kind)
        if float(opt.get('weight', 1)) <= 0:
            continue
        if kind == 'sam' and not sam_mask_files(opt.get('dir'), photo):
            continue
        out.append(kind)
    return out


def choose_kind(masks_opt, rng, photo=None):
    """Draw a mask kind by its ``weight`` among the kinds available for the photo."""
    kinds = available_kinds(masks_opt, photo)
    if not kinds:
        raise UserInputError('masks.kinds: no usable mask kind (all weights are 0 or SAM masks are missing)')
    weights = np.array([float(kind_options(masks_opt, k).get('weight', 1)) for k in kinds])
    return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]


def make_mask(kind, shape, rng, image=None, opt=None, photo=None, box=None):
    """Make one binary swap mask.

    Args:
        kind (str): A key of ``MASK_KINDS``.
        shape (tuple[int]): (H, W).
        rng (np.random.Generator): The sample's generator (the mask is a function of its state).
        image (np.ndarray | None): float32 RGB (H, W, 3) in [0, 1]; needed by ``segments``.
        opt (dict | None): The kind's options (see module docstring; ``coverage`` included).
        photo (str | None), box (tuple | None): Source photo and crop box; needed by ``sam``.

    Returns:
        np.ndarray: float32 (H, W) with values in {0, 1}, at least ``MIN_COVERAGE`` of it set.
    """
    if kind not in MASK_KINDS:
        raise UserInputError(f'unknown mask kind {kind!r}; choose from {sorted(MASK_KINDS)}')
    mask = MASK_KINDS[kind](tuple(shape), rng, opt or {}, image=image, photo=photo, box=box)
    if mask.mean() < MIN_COVERAGE:
        # a degenerate draw (e.g. one tiny segment); fall back to a blob of the same target size
        mask = np.maximum(mask, blob_mask(tuple(shape), rng, {'coverage': (MIN_COVERAGE * 2, MIN_COVERAGE * 4)}))
    return mask.astype(np.float32)
