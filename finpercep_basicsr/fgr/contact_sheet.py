"""A contact sheet of FGR samples for a person to check: I_syn | mask | M_gt over I_syn, one row each."""
import os

import cv2
import numpy as np

from finpercep_basicsr.utils.image_io import decode_map, read_image

_CAPTION_H = 18


def _tile(img, size):
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def pdm_overlay(syn, pdm, mask):
    """The label map as a heat map over the image inside ``mask``; outside it the image is dimmed.

    Args:
        syn (np.ndarray): float32 RGB (H, W, 3) in [0, 1].
        pdm, mask (np.ndarray): float32 (H, W) in [0, 1].

    Returns:
        np.ndarray: float32 RGB (H, W, 3) in [0, 1].
    """
    heat = cv2.applyColorMap(np.round(pdm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    m = mask[..., None]
    return m * (0.4 * syn + 0.6 * heat) + (1 - m) * 0.5 * syn


def _caption(lines, width):
    """White bar with one text line per entry (long lines are cut by the image edge)."""
    bar = np.full((_CAPTION_H * len(lines), width, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(bar, text, (4, _CAPTION_H * (i + 1) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return bar


def make_contact_sheet(root, entries, out_path, num=8, tile=192):
    """Write a PNG with ``num`` samples spread evenly over ``entries`` (meta dicts); returns its path."""
    if not entries:
        return None
    picks = np.unique(np.linspace(0, len(entries) - 1, min(num, len(entries))).round().astype(int))
    rows = []
    for i in picks:
        entry = entries[i]
        name = entry['name']
        syn = read_image(os.path.join(root, 'syn', f'{name}.png'))
        mask, pdm = (decode_map(np.fromfile(os.path.join(root, key, f'{name}.png'), np.uint8), name)
                     for key in ('mask', 'pdm'))
        # a swap into another SR image is labelled everywhere (fgr.labels), a swap into the GT inside the mask
        labelled = np.ones_like(mask) if entry.get('swap_base') else mask
        cells = [syn, np.repeat(mask[..., None], 3, axis=2), pdm_overlay(syn, pdm, labelled)]
        row = np.concatenate([_tile(c, tile) for c in cells], axis=1)
        row = np.round(np.clip(row, 0, 1) * 255).astype(np.uint8)
        details = (f'{entry.get("sr_model")} | {entry.get("mask_kind")} | area {entry.get("mask_area", 0):.2f} | '
                   f'in-mask M {entry.get("pdm_mean_in_mask", 0):.2f}')
        text = [name, details]
        rows.append(np.concatenate([_caption(text, row.shape[1]), row], axis=0))
    header = _caption(['I_syn | mask (white = from SR) | M_gt heat map', '(blue 0 .. red 1) over I_syn'],
                      rows[0].shape[1])
    sheet = np.concatenate([header] + rows, axis=0)
    if not cv2.imwrite(out_path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {out_path}')
    return out_path
