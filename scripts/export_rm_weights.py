"""Turn a reward-model training checkpoint into a release file: one weight set, checked, with its sha256.

    python scripts/export_rm_weights.py --ckpt experiments/FinPercepRM_stage3/models/net_reward_latest.pth \
        --opt options/pretrained/finpercep_rm.yml --out weights/finpercep_rm.pth [--param-key params_ema] [--half]

The chosen weights (``params_ema`` by default: what validation measured) are loaded strictly into the
network of ``--opt`` (so the release fits its option file), saved as ``{'params': state}`` atomically,
and ``OUT.sha256`` is written beside (``sha256sum -c`` format). Prints the size and the digest.
``--half`` stores the floating-point tensors as float16 (half the file; they load into the fp32
network unchanged in layout, rounded to 3 significant digits): for a model that is only scored.
See ``finpercep_basicsr.convert.rm_release``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt', required=True, help='training checkpoint (net_reward_*.pth)')
    parser.add_argument('--opt', required=True, help='option file whose network_reward the release must fit')
    parser.add_argument('--out', required=True, help='release file (.pth)')
    parser.add_argument('--param-key', default='params_ema', help='weights to keep (params_ema or params)')
    parser.add_argument('--half', action='store_true', help='store floating-point tensors as float16')
    args = parser.parse_args(argv)
    from finpercep_basicsr.convert.rm_release import export_rm_release
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        digest, size = export_rm_release(args.ckpt, args.opt, args.out, args.param_key, args.half)
        print(f'{args.out}: {size / 2 ** 20:.2f} MiB, sha256 {digest}')
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
