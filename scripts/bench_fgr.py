"""Benchmark the FGR build (samples per minute) and LMDB vs folder reading (items per second).

Usage:
    python scripts/bench_fgr.py [-opt options/data/fgr_build_default.yml] [--samples 8]
        [--photos datasets/photos] [--num_workers N] [--out DIR] [--read_seconds 3]

Builds the first ``--samples`` samples of the option file's build into a fresh folder (``--out``, or
a temporary one that is removed), prints the end-to-end rate (model loading, worker start-up, LMDB
and contact sheet included), then reads the built set through ``FinPercepFGRDataset`` with the disk
and the LMDB backend, alternating full passes for about ``--read_seconds`` each after one warm-up
pass (so both read from the page cache), and prints items/s and the LMDB/folder ratio.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', default='options/data/fgr_build_default.yml')
    parser.add_argument('--samples', type=int, default=8, help='samples to build (rounded up to whole crops)')
    parser.add_argument('--photos', action='append', help='override photos.folders (repeatable)')
    parser.add_argument('--num_workers', type=int, help='override num_workers')
    parser.add_argument('--out', help='build folder (default: a temporary folder, removed afterwards)')
    parser.add_argument('--read_seconds', type=float, default=3.0, help='time per read backend')
    return parser.parse_args(argv)


def read_rate(dataset, seconds):
    """Items per second over whole passes until ``seconds`` have elapsed (after one warm-up pass)."""
    for i in range(len(dataset)):
        dataset[i]
    items, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(len(dataset)):
            dataset[i]
        items += len(dataset)
    return items / (time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from finpercep_basicsr.data.finpercep_fgr_dataset import FinPercepFGRDataset
    from finpercep_basicsr.fgr.builder import build_fgr
    from finpercep_basicsr.utils.errors import UserInputError
    torch.set_num_threads(1)
    with open(args.opt) as f:
        opt = yaml.safe_load(f)
    if args.photos:
        opt['photos']['folders'] = args.photos
    if args.num_workers is not None:
        opt['num_workers'] = args.num_workers
    out = args.out or tempfile.mkdtemp(prefix='bench_fgr_')
    if args.out and os.path.exists(out):
        print(f'error: {out} exists; the benchmark needs a fresh folder', file=sys.stderr)
        return 2
    opt.update(dataroot=out, max_samples=args.samples, contact_sheet={'num': 4, 'tile': 128})
    try:
        try:
            summary = build_fgr(opt, progress=False)
        except UserInputError as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
        sources = ', '.join(s.get('name', s['type']) for s in opt['sr_sources'])
        print(f'build: {summary["built_now"]} samples of {opt["photos"]["crop_size"]} px with '
              f'{len(opt["sr_sources"])} SR sources ({sources}), '
              f'num_workers={opt.get("num_workers", 0)}, in {summary["seconds"]:.1f} s -> '
              f'{summary["samples_per_minute"]:.1f} samples/min (end to end)')
        rates = {}
        for backend in ('disk', 'lmdb'):
            dataset = FinPercepFGRDataset({'dataroot': out, 'phase': 'val', 'io_backend': {'type': backend}})
            rates[backend] = read_rate(dataset, args.read_seconds)
        print(f'read ({len(dataset)} items, 5 PNGs each, decode included): folder {rates["disk"]:.1f} items/s, '
              f'LMDB {rates["lmdb"]:.1f} items/s, LMDB/folder = {rates["lmdb"] / rates["disk"]:.2f}')
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
