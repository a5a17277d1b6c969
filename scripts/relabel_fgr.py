"""Relabel a stored FGR set under other label options (see ``finpercep_basicsr/fgr/relabel.py``).

Usage:
    python scripts/relabel_fgr.py -opt options/data/fgr_labels_pixel.yml --src datasets/FGR_v3/gan \
        --out datasets/FGR_v3_pixel/gan [--no_progress]

``-opt`` is a YAML file with a ``labels`` mapping (``fgr.labels``' keys; a build option file works). The SR models
are not rerun: the new set links the source's images and writes new label maps. Rerun the same command to resume.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True, help='YAML with the labels options')
    parser.add_argument('--src', required=True, help='the FGR set to relabel')
    parser.add_argument('--out', required=True, help='the new set\'s folder')
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    from finpercep_basicsr.fgr.labels import load_label_options
    from finpercep_basicsr.fgr.relabel import relabel_fgr
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        labels = load_label_options(args.opt)
        print(json.dumps(relabel_fgr(args.src, args.out, labels, progress=not args.no_progress), indent=2))
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
