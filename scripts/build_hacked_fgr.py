"""Build FGR samples from a generator's own reward hacks (see ``finpercep_basicsr/fgr/hacked.py``).

Usage:
    python scripts/build_hacked_fgr.py -opt options/data/fgr_hacked_default.yml [--split train|val]
        [--dataroot DIR] [--no_progress]

Trains each hacking run with the RLHF entry (resumable, seeded), then builds the FGR set with one
SR source per saved checkpoint. Rerun the same command to resume. Prints the build summary.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True, help='option YAML (options/data/fgr_hacked_*.yml)')
    parser.add_argument('--split', choices=['train', 'val'], help='override fgr.split')
    parser.add_argument('--dataroot', help='override fgr.dataroot')
    parser.add_argument('--no_progress', action='store_true', help='no progress output')
    args = parser.parse_args(argv)
    from finpercep_basicsr.fgr.hacked import build_hacked_fgr_from_file
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        summary = build_hacked_fgr_from_file(args.opt, args.split, args.dataroot, progress=not args.no_progress)
        print(json.dumps(summary, indent=2))
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
