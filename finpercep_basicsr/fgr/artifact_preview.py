"""A contact sheet of the synthetic artifact SR sources at low and high strength, for a person to check by eye.

A ``size`` px crop of scikit-image's astronaut is the GT, its area downscale x4 the LR image. One row
per family and mode/style: GT | base SR | strength low | strength high. Each cell's caption gives its
Laplacian energy relative to GT's (``metrics.trivial_detectors``, the artifact index of the hacking
benchmark: the hacked RLHF outputs of DESIGN.md section 6 measured 20-44x) and the time of the call
(base included). All cells use one seed, so a sheet is reproducible.
"""
import inspect
import os
import time

import cv2
import numpy as np

from finpercep_basicsr.fgr.contact_sheet import _caption
from finpercep_basicsr.metrics.trivial_detectors import laplacian_energy
from finpercep_basicsr.utils.errors import UserInputError

SHEET_NAME = 'artifact_sources.png'


def astronaut_crop(size):
    """A ``size`` px crop of the astronaut (face, suit edges and the flag) as float32 RGB in [0, 1]."""
    from skimage import data
    img = data.astronaut()
    top, left = max(0, 150 - size // 4), max(0, 280 - size // 2)
    return np.ascontiguousarray(img[top:top + size, left:left + size]).astype(np.float32) / 255.0


def variants(cls):
    """Option overrides showing each mode/style of a family separately (``[{}]`` if it has none)."""
    for key in ('modes', 'styles'):
        param = inspect.signature(cls).parameters.get(key)
        if param is not None:
            return [{key: [mode]} for mode in param.default]
    return [{}]


def _energy(img):
    return float(laplacian_energy(img).mean())


def preview_artifact_sources(out_dir, size=256, base='bicubic', seed=0, types=None, low=0.25, high=1.0):
    """Write ``out_dir/artifact_sources.png`` and print one line per row (``scripts/preview_artifact_sources.py``).

    Args:
        out_dir (str): Output folder.
        size (int): GT crop size (a multiple of 4, >= 32).
        base (str): Base SR source type (e.g. ``realesrgan_ncnn``).
        seed (int): Seed of every artifact source.
        types (list[str] | None): Artifact types (default: all of ``artifact_types()``).
        low, high (float): Strengths of the two artifact columns.

    Returns:
        str: The sheet's path.

    Raises:
        UserInputError: A bad size or an unknown artifact type.
    """
    from finpercep_basicsr.fgr.sources import SR_SOURCE_TYPES, build_sr_source
    from finpercep_basicsr.fgr.sources.artifact_sources import artifact_types
    if size % 4 or size < 32:
        raise UserInputError(f'--size must be a multiple of 4 and >= 32, got {size}')
    unknown = [kind for kind in types or () if kind not in artifact_types()]
    if unknown:
        raise UserInputError(f'--types: unknown artifact type {unknown[0]!r}; '
                             f'choose from {", ".join(artifact_types())}')
    gt = astronaut_crop(size)
    lq = cv2.resize(gt, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
    base_sr = build_sr_source({'type': base})(lq)  # every type defaults to x4
    ref = _energy(gt)
    print(f'base {base}: lap {_energy(base_sr) / ref:.2f}x GT')
    rows = []
    for kind in types or artifact_types():
        for extra in variants(SR_SOURCE_TYPES[kind][0]):
            label = kind + ''.join(f' {v[0]}' for v in extra.values())
            cells, notes = [gt, base_sr], []
            for strength in (low, high):
                source = build_sr_source({'type': kind, 'base': {'type': base}, 'seed': seed,
                                          'strength': [strength, strength], **extra})
                start = time.perf_counter()
                out = source(lq)
                seconds = time.perf_counter() - start
                cells.append(out)
                notes.append(f's={strength:g}: lap {_energy(out) / ref:.1f}x GT, {1e3 * seconds:.0f} ms')
            print(f'{label:34s} | ' + ' | '.join(notes))
            row = np.round(np.clip(np.concatenate(cells, axis=1), 0, 1) * 255).astype(np.uint8)
            rows.append(np.concatenate([_caption([f'{label}: GT | base | ' + ' | '.join(notes)], row.shape[1]), row],
                                       axis=0))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, SHEET_NAME)
    if not cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')
    print(f'wrote {path}')
    return path
