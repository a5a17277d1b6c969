"""Link (or copy) the drop-in files into an existing BasicSR-style codebase.

    python scripts/link_into_basicsr.py TARGET [--copy] [--force]

TARGET is the root of a BasicSR-style tree (it holds ``basicsr/archs``, ``basicsr/losses``,
``basicsr/models``, ``basicsr/data`` and ``basicsr/train.py``). Afterwards TARGET's own
``basicsr/train.py -opt X.yml`` finds every FinPercep component, as long as ``finpercep_basicsr`` is
importable there. Running it again changes nothing.
"""
import argparse
import filecmp
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPACKAGES = ('archs', 'losses', 'models', 'data')
REQUIRED = [os.path.join('basicsr', sub, '__init__.py') for sub in SUBPACKAGES] + [
    os.path.join('basicsr', 'train.py'), os.path.join('basicsr', 'utils', 'registry.py')]


def drop_in_files():
    """(subpackage, absolute path) of every drop-in file in this repository."""
    files = []
    for sub in SUBPACKAGES:
        folder = os.path.join(REPO, sub)
        files += [(sub, os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.endswith('.py')]
    return files


def _already_there(src, dest, copy):
    if os.path.islink(dest):
        return not copy and os.path.realpath(dest) == os.path.realpath(src)
    return copy and os.path.isfile(dest) and filecmp.cmp(src, dest, shallow=False)


def link_into(target, copy=False, force=False, log=print):
    """Place the drop-in files into ``target``; returns the list of (action, destination).

    Raises:
        SystemExit: ``target`` is not a BasicSR-style tree, or a different file is in the way and
            ``force`` is not set (nothing is changed in that case).
    """
    missing = [p for p in REQUIRED if not os.path.isfile(os.path.join(target, p))]
    if missing:
        raise SystemExit(f'error: {target} is not a BasicSR-style tree: missing {", ".join(missing)}')
    plan = []
    for sub, src in drop_in_files():
        dest = os.path.join(target, 'basicsr', sub, os.path.basename(src))
        if _already_there(src, dest, copy):
            plan.append(('unchanged', src, dest))
        elif os.path.lexists(dest) and not force:
            raise SystemExit(f'error: {dest} exists and is not this drop-in; use --force to replace it')
        else:
            plan.append(('copied' if copy else 'linked', src, dest))
    for action, src, dest in plan:
        if action != 'unchanged':
            if os.path.lexists(dest):
                os.remove(dest)
            shutil.copyfile(src, dest) if copy else os.symlink(src, dest)
        log(f'{action:9s} {dest}')
    return [(action, dest) for action, _, dest in plan]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('target', help='root of the BasicSR-style codebase')
    parser.add_argument('--copy', action='store_true', help='copy the files instead of symlinking them')
    parser.add_argument('--force', action='store_true', help='replace other files of the same name')
    args = parser.parse_args(argv)
    link_into(os.path.abspath(args.target), copy=args.copy, force=args.force)
    print('done: run TARGET/basicsr/train.py -opt ... with finpercep_basicsr importable '
          '(pip install -e this repository, or PYTHONPATH)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
