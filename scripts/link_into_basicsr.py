"""Link (or copy) the drop-in files into an existing BasicSR-style codebase.

    python scripts/link_into_basicsr.py TARGET [--copy] [--force]

TARGET is the root of a BasicSR-style tree (it holds ``basicsr/archs``, ``basicsr/losses``,
``basicsr/models``, ``basicsr/data`` and ``basicsr/train.py``). Afterwards TARGET's own
``basicsr/train.py -opt X.yml`` finds every FinPercep component, as long as ``finpercep_basicsr`` is
importable there. Running it again changes nothing. See ``finpercep_basicsr.utils.dropin_links``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('target', help='root of the BasicSR-style codebase')
    parser.add_argument('--copy', action='store_true', help='copy the files instead of symlinking them')
    parser.add_argument('--force', action='store_true', help='replace other files of the same name')
    args = parser.parse_args(argv)
    from finpercep_basicsr.utils.dropin_links import link_into
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors

    def run():
        link_into(os.path.abspath(args.target), copy=args.copy, force=args.force)
        print('done: run TARGET/basicsr/train.py -opt ... with finpercep_basicsr importable '
              '(pip install -e this repository, or PYTHONPATH)')
        return 0

    return exit_code_for_user_errors(run)


if __name__ == '__main__':
    sys.exit(main())
