"""Split SR outputs' error against GT into mean colour, the LQ's band and finer detail (exact, per run).

    python scripts/error_bands.py --gt datasets/test_heldout/gt --run start=bench_hacking/images/start \
        --run global_only=bench_hacking/images/global_only [--scale 4] [--out bands.json]

See ``finpercep_basicsr.hacking.error_bands``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from finpercep_basicsr.utils.errors import exit_code_for_user_errors  # noqa: E402


def main(argv=None):
    from finpercep_basicsr.hacking.error_bands import main as bands
    return exit_code_for_user_errors(bands, argv)


if __name__ == '__main__':
    sys.exit(main())
