"""Cut a paired SR test set (gt/ and lq/) from held-out photos, reproducibly.

    python scripts/make_test_pairs.py --photos datasets/photos_all --out datasets/test_heldout \\
        --size 128 --crops-per-photo 4 --seed 1000 --name skimage_chelsea.png --name skimage_coffee.png \\
        --name opencv_butterfly.png --name opencv_fruits.png --name opencv_leuvenA.png --name opencv_messi5.png

Without ``--name`` every photo of ``--photos`` is used. The LR images come from the Real-ESRGAN second-order
degradation (x4) with seed SEED + pair index; ``OUT/pairs.jsonl`` records each pair's photo, box and seed.
See ``finpercep_basicsr.fgr.test_pairs``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--photos', required=True, help='folder of HR photos')
    parser.add_argument('--out', required=True, help='output folder (gets gt/, lq/ and pairs.jsonl)')
    parser.add_argument('--name', action='append', default=[], help='photo file name in --photos (repeatable)')
    parser.add_argument('--size', type=int, default=128, help='HR crop side (px, a multiple of 4)')
    parser.add_argument('--crops-per-photo', type=int, default=1, help='1 = the centre crop; more are seeded')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.fgr.test_pairs import cut_test_pairs, named_photos
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        photos = named_photos(args.photos, args.name)
        rows = cut_test_pairs(photos, args.out, args.size, args.crops_per_photo, args.seed)
        print(f'{len(rows)} pairs from {len(photos)} photos in {args.out}')
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
