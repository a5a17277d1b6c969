"""Where an SR output's error against GT lies: its mean colour, the band the LQ input fixes, or finer detail.

``python scripts/error_bands.py --gt GT_DIR --run start=DIR --run hacked=DIR [--scale 4]`` prints, per run,
the mean squared error over the images split exactly (Parseval) into three frequency bands of the error
image ``SR - GT``, averaged over the colour channels:

- ``color``: the DC term, i.e. the squared difference of the mean colours (a global cast);
- ``lq_band``: 0 < f <= 1 / (2 * scale) cycles per pixel, the frequencies an x``scale`` LQ input still
  holds (tone, shading, the shapes of edges);
- ``detail``: f > 1 / (2 * scale), what SR has to invent (texture, sharpness, etched strokes).

The three add up to the MSE. A reward hack that costs PSNR through a colour cast shows in ``color``; one
that invents texture shows in ``detail``.
"""
import json
import os

import numpy as np

from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import read_image

BANDS = ('color', 'lq_band', 'detail')


def error_bands(sr, gt, scale=4):
    """MSE of ``sr`` vs ``gt`` ((H, W, C) float in [0, 1]) split into ``BANDS``; the values sum to the MSE."""
    if sr.shape != gt.shape:
        raise UserInputError(f'SR and GT sizes differ: {sr.shape} vs {gt.shape}')
    err = (sr - gt).astype(np.float64)
    h, w = err.shape[:2]
    power = np.abs(np.fft.fft2(err, axes=(0, 1))) ** 2 / float(h * w) ** 2  # Parseval: sums to mean(err ** 2)
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing='ij'))
    low = (freq > 0) & (freq <= 1.0 / (2 * scale))
    per_channel = power.reshape(h * w, -1)
    return {'color': float(per_channel[0].mean()),
            'lq_band': float(per_channel[low.reshape(-1)].sum(0).mean()),
            'detail': float(per_channel[(freq > 1.0 / (2 * scale)).reshape(-1)].sum(0).mean())}


def run_bands(gt_dir, run_dir, scale=4):
    """Mean bands over the images of ``gt_dir``, each read from ``run_dir`` under the same file name."""
    names = sorted(n for n in os.listdir(gt_dir) if not n.startswith('.'))
    if not names:
        raise UserInputError(f'{gt_dir}: no images')
    totals = dict.fromkeys(BANDS, 0.0)
    for name in names:
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            raise UserInputError(f'{path}: missing (every GT image needs an output of the same name)')
        sr, gt = read_image(path), read_image(os.path.join(gt_dir, name))
        if sr.shape != gt.shape:
            raise UserInputError(f'{path}: size {sr.shape[:2]} differs from its GT {gt.shape[:2]}')
        for band, value in error_bands(sr, gt, scale).items():
            totals[band] += value / len(names)
    return dict(totals, mse=sum(totals.values()), images=len(names))


def markdown(results):
    """The table of ``{run: run_bands(...)}``, in units of 1e-3."""
    lines = ['| run | MSE | mean colour | LQ band | detail |', '|---|---|---|---|---|']
    for run, r in results.items():
        lines.append(f'| {run} | ' + ' | '.join(f'{1e3 * r[k]:.2f}' for k in ('mse',) + BANDS) + ' |')
    return '\n'.join(lines + ['', '(x 1e-3; the three bands add up to the MSE)'])


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gt', required=True, help='folder of GT images')
    parser.add_argument('--run', action='append', required=True, metavar='NAME=DIR',
                        help='outputs of one generator, file names as in --gt (repeatable)')
    parser.add_argument('--scale', type=int, default=4, help='SR scale: the LQ band ends at 1/(2 scale) cycles/px')
    parser.add_argument('--out', help='also write the numbers to this JSON file')
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, sep, folder = spec.partition('=')
        if not sep or not name or not folder:
            raise UserInputError(f'--run {spec!r}: expected NAME=DIR')
        runs[name] = run_bands(args.gt, folder, args.scale)
    print(markdown(runs))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(runs, f, indent=1)
    return 0
