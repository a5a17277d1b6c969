"""Gather real HR photos (packaged or your own) into a folder with licences, and cut HR crops.

Usage:
    python scripts/get_photos.py --out datasets/photos                       # skimage + opencv-doc
    python scripts/get_photos.py --out datasets/photos --crops datasets/photos_crops --crop_size 256 \\
        --stride 128 --min_size 64
    python scripts/get_photos.py --out datasets/div2k --source none --input /data/DIV2K_train_HR --crops ...
    python scripts/get_photos.py --out datasets/photos_all --source skimage --source opencv-doc \\
        --source plasma-wallpapers --workdir datasets/debs                  # + the Plasma photographs
    python scripts/get_photos.py --out datasets/photos_lomiri --source lomiri-wallpapers \\
        --workdir datasets/debs                                             # the Lomiri photographs
    python scripts/get_photos.py --out datasets/photos_test --source mate-backgrounds   # the bench's test split

Packaged sources: ``skimage`` (scikit-image's natural colour photos), ``opencv-doc``,
``plasma-wallpapers``, ``lomiri-wallpapers`` and ``mate-backgrounds`` (Debian packages opencv-doc,
plasma-workspace-wallpapers, lomiri-wallpapers-16.04 and mate-backgrounds, fetched with ``apt-get
download`` and unpacked with ``dpkg -x``; nothing is installed; ``--workdir DIR`` keeps the .debs and
their trees for the next run, else a temporary folder is used; ``--opencv_deb FILE`` / ``--plasma_deb
FILE`` / ``--lomiri_deb FILE`` / ``--mate_deb FILE`` use a downloaded .deb). Of the Plasma, Lomiri and
MATE wallpapers only the photographs are taken (``PLASMA_PHOTOS`` / ``LOMIRI_PHOTOS`` / ``MATE_PHOTOS``
in ``finpercep_basicsr/fgr/deb_photos.py``, each checked by eye). A Plasma photo comes at its largest
resolution at most ``--plasma_max_width`` px wide, with the licence and author of its metadata; a
Lomiri photo wider than ``--lomiri_max_width`` is downscaled to it (area interpolation), with the
licence and copyright of its own paragraph in the package's debian/copyright; so is a MATE photo
wider than ``--mate_max_width``.
``--out`` gets 8-bit RGB PNGs, ``sources.jsonl`` and ``licences.json``; ``--crops`` gets the crops
and ``crops.jsonl``. Bad photos are converted (grayscale, opaque RGBA, 16-bit) or skipped (corrupt,
transparent RGBA, too small) with a warning naming the file, and listed in the printed summary.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder for the full photos')
    parser.add_argument('--source', action='append',
                        choices=['skimage', 'opencv-doc', 'plasma-wallpapers', 'lomiri-wallpapers', 'mate-backgrounds',
                                 'none'],
                        help='packaged photo set (repeatable; default: skimage and opencv-doc; none = only --input)')
    parser.add_argument('--input', action='append', default=[], help='your own photo folder (repeatable)')
    parser.add_argument('--opencv_deb', help='an already downloaded opencv-doc_*.deb')
    parser.add_argument('--plasma_deb', help='an already downloaded plasma-workspace-wallpapers_*.deb')
    parser.add_argument('--plasma_max_width', type=int, default=3840,
                        help='per wallpaper, the largest image at most this wide (0 = the largest)')
    parser.add_argument('--lomiri_deb', help='an already downloaded lomiri-wallpapers-16.04_*.deb')
    parser.add_argument('--lomiri_max_width', type=int, default=2560,
                        help='Lomiri photos wider than this are downscaled to it (0 = keep the size)')
    parser.add_argument('--mate_deb', help='an already downloaded mate-backgrounds_*.deb')
    parser.add_argument('--mate_max_width', type=int, default=640,
                        help='MATE photos wider than this are downscaled to it (0 = keep the size)')
    parser.add_argument('--workdir', help='cache folder for the Debian packages (default: a temporary folder)')
    parser.add_argument('--min_photo_size', type=int, default=0, help='skip photos with a shorter side below this')
    parser.add_argument('--crops', help='also cut HR crops into this folder')
    parser.add_argument('--crop_size', type=int, default=256)
    parser.add_argument('--stride', type=int, default=128)
    parser.add_argument('--min_size', type=int, default=0,
                        help='border leftover (px) that still gets a border-flush crop')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from finpercep_basicsr.fgr.photos import get_photos
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        summary = get_photos(args.out, args.source or ['skimage', 'opencv-doc'], args.input, args.crops,
                             args.crop_size, args.stride, args.min_size, min_size=args.min_photo_size,
                             workdir=args.workdir, opencv_deb=args.opencv_deb, plasma_deb=args.plasma_deb,
                             plasma_max_width=args.plasma_max_width, lomiri_deb=args.lomiri_deb,
                             lomiri_max_width=args.lomiri_max_width, mate_deb=args.mate_deb,
                             mate_max_width=args.mate_max_width)
        print(json.dumps(summary, indent=2))
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
