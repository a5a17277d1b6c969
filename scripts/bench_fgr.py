"""Benchmark the FGR build (samples per minute) and LMDB vs folder reading (items per second).

Usage:
    python scripts/bench_fgr.py [-opt options/data/fgr_build_default.yml] [--samples 8]
        [--photos datasets/photos] [--num_workers N] [--out DIR] [--read_seconds 3]

Builds the first ``--samples`` samples of the option file's build into a fresh folder (``--out``, or
a temporary one that is removed), prints the end-to-end rate (model loading, worker start-up, LMDB
and contact sheet included), then reads the built set through ``FinPercepFGRDataset`` with the disk
and the LMDB backend, alternating full passes for about ``--read_seconds`` each after one warm-up
pass (so both read from the page cache), and prints items/s and the LMDB/folder ratio.
See ``finpercep_basicsr.fgr.build_bench``.
"""
import argparse
import os
import sys

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


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.fgr.build_bench import run_build_bench
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    return exit_code_for_user_errors(run_build_bench, args.opt, args.samples, args.photos, args.num_workers,
                                     args.out, args.read_seconds)


if __name__ == '__main__':
    sys.exit(main())
