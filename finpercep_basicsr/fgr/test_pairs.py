"""Paired SR test sets (HR crop + its degraded LR) cut from held-out photos, reproducibly.

Interface::

    rows = cut_test_pairs(['skimage_chelsea.png', ...], 'datasets/test_heldout', size=128,
                          crops_per_photo=4, seed=1000)

writes ``OUT/gt/NAME.png``, ``OUT/lq/NAME.png`` and ``OUT/pairs.jsonl`` (one row per pair: name, photo,
box, degradation seed). One crop per photo is the centre crop, named after the photo; more crops are
drawn uniformly with ``numpy.random.default_rng(seed + photo index)`` and named ``STEM_K``. The LR of
pair ``i`` (in writing order) is ``degrade(hr, degradation, seed=seed + i)``, so the set depends only on
the photos, their order and the arguments.
"""
import json
import os

import numpy as np

from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import list_images, read_image, write_rgb8


def named_photos(folder, names=()):
    """Paths of the photos called ``names`` (file names, in that order) under ``folder``, searched recursively;
    without names, every photo there, sorted.

    Raises:
        UserInputError: A name that is not in ``folder``.
    """
    available = {os.path.basename(p): p for p in list_images(folder, recursive=True)}
    missing = [n for n in names if n not in available]
    if missing:
        raise UserInputError(f'not in {folder}: {", ".join(missing)}')
    return [available[n] for n in names] if names else sorted(available.values())


def crop_boxes(height, width, size, count, seed):
    """``count`` (top, left) corners of ``size`` crops: the centre one, or ``count`` seeded uniform ones."""
    if count == 1:
        return [((height - size) // 2, (width - size) // 2)]
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))) for _ in range(count)]


def cut_test_pairs(photos, out_dir, size, crops_per_photo=1, seed=0, degradation=None, shrink_to_fit=False):
    """Cut HR crops of ``photos`` and degrade them; returns the rows of ``pairs.jsonl``.

    Args:
        size (int): Crop side; rounded down to a multiple of the degradation's scale.
        shrink_to_fit (bool): A photo smaller than ``size`` gives a smaller (centre) crop instead of an error.
        degradation (dict | None): ``fgr.degradation.degrade`` options (default: Real-ESRGAN second order, x4).
    """
    from finpercep_basicsr.fgr.degradation import degrade
    degradation = dict(degradation or {'scale': 4})
    scale = int(degradation.get('scale', 4))
    if crops_per_photo < 1:
        raise UserInputError(f'crops_per_photo must be >= 1, got {crops_per_photo}')
    for sub in ('gt', 'lq'):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    rows = []
    for photo_index, path in enumerate(photos):
        img = read_image(path)
        h, w = img.shape[:2]
        side = min(size, h, w) if shrink_to_fit else size
        side = side // scale * scale
        if side < scale or side > min(h, w):
            raise UserInputError(f'{path}: {w}x{h} is smaller than the {size} px test crop')
        stem = os.path.splitext(os.path.basename(path))[0]
        boxes = crop_boxes(h, w, side, crops_per_photo, seed + photo_index)
        for k, (top, left) in enumerate(boxes):
            name = f'{stem}.png' if crops_per_photo == 1 else f'{stem}_{k}.png'
            hr = img[top:top + side, left:left + side]
            lq_seed = seed + len(rows)
            write_rgb8(os.path.join(out_dir, 'gt', name), hr)
            write_rgb8(os.path.join(out_dir, 'lq', name), degrade(hr, degradation, seed=lq_seed))
            rows.append({'name': name, 'photo': os.path.basename(path), 'box': [top, left, side, side],
                         'degradation_seed': lq_seed})
    with open(os.path.join(out_dir, 'pairs.jsonl'), 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
    return rows
