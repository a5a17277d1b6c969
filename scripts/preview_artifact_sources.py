"""Contact sheet of the synthetic artifact SR sources at low and high strength, for a person to check by eye.

Usage:
    python scripts/preview_artifact_sources.py --out DIR [--size 256] [--base bicubic] [--seed 0]
        [--types artifact_oversharpen artifact_ringing ...] [--low 0.25] [--high 1.0]

Takes a ``--size`` px crop of scikit-image's astronaut as GT, makes the LR image by an area downscale x4 and
writes ``DIR/artifact_sources.png``: one row per family and mode/style, GT | base SR | strength low | strength
high. Each cell's caption gives its mean squared Laplacian relative to GT's (the hacked RLHF outputs of DESIGN.md
section 6 measured 20-44x) and the time of the call (base included); the same lines are printed. All cells use
``--seed``, so a sheet is reproducible.
"""
import argparse
import inspect
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--size', type=int, default=256, help='GT crop size (divisible by 4)')
    parser.add_argument('--base', default='bicubic', help='base SR source type (e.g. realesrgan_ncnn)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--types', nargs='+', help='artifact types (default: all)')
    parser.add_argument('--low', type=float, default=0.25, help='strength of the low column')
    parser.add_argument('--high', type=float, default=1.0, help='strength of the high column')
    return parser.parse_args(argv)


def laplacian_energy(img):
    """Mean squared Laplacian of the luminance (the trivial artifact detector of DESIGN.md section 6)."""
    y = cv2.cvtColor(np.ascontiguousarray(img, np.float32), cv2.COLOR_RGB2GRAY)
    return float(np.mean(cv2.Laplacian(y, cv2.CV_32F) ** 2))


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


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.fgr.contact_sheet import _caption
    from finpercep_basicsr.fgr.sources import SR_SOURCE_TYPES, build_sr_source
    from finpercep_basicsr.fgr.sources.artifact_sources import artifact_types
    from finpercep_basicsr.utils.errors import UserInputError, exit_code_for_user_errors

    def run():
        if args.size % 4 or args.size < 32:
            raise UserInputError(f'--size must be a multiple of 4 and >= 32, got {args.size}')
        types = args.types or artifact_types()
        gt = astronaut_crop(args.size)
        lq = cv2.resize(gt, (args.size // 4, args.size // 4), interpolation=cv2.INTER_AREA)
        base = build_sr_source({'type': args.base})(lq)  # every type defaults to x4
        ref = laplacian_energy(gt)
        print(f'base {args.base}: lap {laplacian_energy(base) / ref:.2f}x GT')
        rows = []
        for kind in types:
            if kind not in artifact_types():
                raise UserInputError(f'--types: unknown artifact type {kind!r}; '
                                     f'choose from {", ".join(artifact_types())}')
            for extra in variants(SR_SOURCE_TYPES[kind][0]):
                label = kind + ''.join(f' {v[0]}' for v in extra.values())
                cells, notes = [gt, base], []
                for strength in (args.low, args.high):
                    source = build_sr_source({'type': kind, 'base': {'type': args.base}, 'seed': args.seed,
                                              'strength': [strength, strength], **extra})
                    start = time.perf_counter()
                    out = source(lq)
                    seconds = time.perf_counter() - start
                    cells.append(out)
                    notes.append(f's={strength:g}: lap {laplacian_energy(out) / ref:.1f}x GT, {1e3 * seconds:.0f} ms')
                print(f'{label:34s} | ' + ' | '.join(notes))
                row = np.round(np.clip(np.concatenate(cells, axis=1), 0, 1) * 255).astype(np.uint8)
                rows.append(np.concatenate([_caption([f'{label}: GT | base | ' + ' | '.join(notes)], row.shape[1]),
                                            row], axis=0))
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, 'artifact_sources.png')
        if not cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
            raise OSError(f'cannot write {path}')
        print(f'wrote {path}')
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
