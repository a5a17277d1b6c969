"""Export RLHF-tuned diffusion adapters in the formats the original projects' inference scripts load.

    python scripts/export_lora.py -opt OPTION.yml --weights experiments/NAME/models/net_g_latest.pth \\
        --format FORMAT --out PATH [--param-key params_ema]

The policy is built from the option file's ``network_g`` (the same base weights as in training),
the checkpoint's trainable tensors are loaded into it, then written as ``osediff_pkl`` (OSEDiff's
``osediff.pkl``), ``diffusers_lora`` (diffusers' pipeline LoRA file; SeeSR), ``stablesr_ckpt``
(StableSR's released checkpoints) or ``merged`` (full weights in the folder the policy reads). The
layouts are described in ``finpercep_basicsr.convert.policy_export``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FORMATS = ('osediff_pkl', 'diffusers_lora', 'stablesr_ckpt', 'merged')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', required=True, help='the training option file (its network_g builds the policy)')
    p.add_argument('--weights', required=True, help='net_g_<iter>.pth of the RLHF run')
    p.add_argument('--param-key', default=None, help='params or params_ema (default: params_ema if present)')
    p.add_argument('--format', required=True, choices=FORMATS)
    p.add_argument('--out', required=True, help='output file (osediff_pkl) or folder (the others)')
    args = p.parse_args(argv)
    from finpercep_basicsr.convert.policy_export import export_policy
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        paths, key = export_policy(args.opt, args.weights, args.format, args.out, args.param_key)
        for path in paths:
            print(f'wrote {path}  ({args.format}, from {args.weights} [{key}])')
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
