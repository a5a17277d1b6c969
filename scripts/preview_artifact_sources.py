"""Contact sheet of the synthetic artifact SR sources at low and high strength, for a person to check by eye.

Usage:
    python scripts/preview_artifact_sources.py --out DIR [--size 256] [--base bicubic] [--seed 0]
        [--types artifact_oversharpen artifact_ringing ...] [--low 0.25] [--high 1.0]

Takes a ``--size`` px crop of scikit-image's astronaut as GT, makes the LR image by an area downscale x4 and
writes ``DIR/artifact_sources.png``: one row per family and mode/style, GT | base SR | strength low | strength
high. Each cell's caption gives its Laplacian energy relative to GT's (the hacked RLHF outputs of DESIGN.md
section 6 measured 20-44x) and the time of the call (base included); the same lines are printed. All cells use
``--seed``, so a sheet is reproducible. See ``finpercep_basicsr.fgr.artifact_preview``.
"""
import argparse
import os
import sys

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


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.fgr.artifact_preview import preview_artifact_sources
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    return exit_code_for_user_errors(preview_artifact_sources, args.out, args.size, args.base, args.seed,
                                     args.types, args.low, args.high)


if __name__ == '__main__':
    sys.exit(main())
