"""Tiny FGR folders for tests: smooth random GT, a blurred-and-noised SR, a rectangle swap and its label."""
import json
import os

import cv2
import numpy as np

from finpercep_basicsr.utils.image_io import write_map16, write_rgb8


def block_means(img, scale):
    """(H, W, C) -> (H / scale, W / scale, C): the mean of each scale x scale block."""
    h, w, c = img.shape
    return img.reshape(h // scale, scale, w // scale, scale, c).mean(axis=(1, 3))


def make_fgr_folder(root, num=4, size=32, seed=0, lq=False):
    """Write ``num`` FGR samples of ``size`` x ``size`` into ``root`` and return ``root``; with ``lq`` also each
    sample's LQ, its GT's 4x4 block means (``lq/``)."""
    rng = np.random.default_rng(seed)
    for key in ('gt', 'sr', 'syn', 'mask', 'pdm') + (('lq',) if lq else ()):
        os.makedirs(os.path.join(root, key), exist_ok=True)
    with open(os.path.join(root, 'meta_info.jsonl'), 'w') as meta:
        for i in range(num):
            name = f'{i:04d}'
            gt = cv2.resize(rng.random((size // 4, size // 4, 3)).astype(np.float32), (size, size))
            sr = np.clip(cv2.GaussianBlur(gt, (5, 5), 2) + rng.normal(0, 0.08, gt.shape), 0, 1).astype(np.float32)
            mask = np.zeros((size, size), np.float32)
            top, left = rng.integers(0, size // 2, 2)
            mask[top:top + size // 2, left:left + size // 2] = 1
            syn = mask[..., None] * sr + (1 - mask[..., None]) * gt
            diff = np.abs(syn - gt).mean(axis=2) * mask
            pdm = diff / max(diff.max(), 1e-8)
            write_rgb8(os.path.join(root, 'gt', f'{name}.png'), gt)
            write_rgb8(os.path.join(root, 'sr', f'{name}.png'), sr)
            write_rgb8(os.path.join(root, 'syn', f'{name}.png'), syn)
            cv2.imwrite(os.path.join(root, 'mask', f'{name}.png'), (mask * 255).astype(np.uint8))
            write_map16(os.path.join(root, 'pdm', f'{name}.png'), pdm)
            if lq:
                write_rgb8(os.path.join(root, 'lq', f'{name}.png'), block_means(gt, 4))
            meta.write(json.dumps({'name': name, 'photo': 'random', 'sr_model': 'blur+noise', 'mask_kind': 'rect',
                                   'seed': seed, 'label_scale': float(max(diff.max(), 1e-8))}) + '\n')
    return root
