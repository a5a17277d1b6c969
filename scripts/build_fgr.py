"""Build an FGR (fine-grained reward) set from HR photos and real SR models.

Usage:
    python scripts/build_fgr.py -opt options/data/fgr_build_default.yml [--split train|val]
        [--num_workers N] [--max_samples N] [--dataroot DIR] [--no_progress] [--shard K/N | --merge]

``--split val`` builds the held-out set from the photos listed in ``photos.heldout`` (``train``,
the default, uses every other photo); ``{split}`` in ``dataroot`` becomes the split's name.

Rerunning the same command resumes a killed build (finished samples are kept and skipped).

Sharded builds (``finpercep_basicsr/fgr/shards.py``): ``--shard K/N`` (1-based, 1 <= K <= N) builds
the crop tasks t with t % N == K - 1 into ``<dataroot>/shards/K-of-N``; run K = 1..N in separate
processes or machines (copy the folders into ``<dataroot>/shards/``), then ``--merge`` with the same
option file writes the dataset an unsharded build gives (same files, same meta_info.jsonl, LMDB).
Each shard prints its own summary with samples_per_minute; the merge lists them all.
Prints a summary (samples, skipped photos and why, time) and writes the folder, its LMDB and a
contact sheet (see ``finpercep_basicsr/fgr/builder.py``).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True, help='build option YAML (options/data/fgr_build_*.yml)')
    parser.add_argument('--split', choices=['train', 'val'], help='override split (val = photos.heldout only)')
    parser.add_argument('--num_workers', type=int, help='override num_workers')
    parser.add_argument('--max_samples', type=int, help='stop after the crops holding the first N samples')
    parser.add_argument('--dataroot', help='override the output folder')
    parser.add_argument('--no_progress', action='store_true', help='no tqdm bar')
    parser.add_argument('--shard', metavar='K/N',
                        help='build only shard K of N (1-based) into <dataroot>/shards/K-of-N')
    parser.add_argument('--merge', action='store_true', help='merge <dataroot>/shards/*-of-N into <dataroot>')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.fgr.builder import load_build_options
    from finpercep_basicsr.fgr.shards import build_or_merge
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        opt = load_build_options(args.opt, split=args.split, num_workers=args.num_workers,
                                 max_samples=args.max_samples, dataroot=args.dataroot)
        print(json.dumps(build_or_merge(opt, args.shard, args.merge, progress=not args.no_progress), indent=2))
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
