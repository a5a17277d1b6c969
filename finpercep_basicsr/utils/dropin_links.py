"""Place the drop-in files (``archs/``, ``losses/``, ``models/``, ``data/`` at the repository root) into a
BasicSR-style tree, so that tree's own ``basicsr/train.py`` finds every FinPercep component.

This module only links or copies files and imports nothing heavy: the drop-ins themselves import
only the subpackage they register, since BasicSR's package scan imports them while ``basicsr`` is
half-initialised (DESIGN.md section 3).
"""
import filecmp
import os
import shutil

from finpercep_basicsr.utils.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUBPACKAGES = ('archs', 'losses', 'models', 'data')
REQUIRED = [os.path.join('basicsr', sub, '__init__.py') for sub in SUBPACKAGES] + [
    os.path.join('basicsr', 'train.py'), os.path.join('basicsr', 'utils', 'registry.py')]


def drop_in_files(repo=REPO):
    """(subpackage, absolute path) of every drop-in file of the repository ``repo``."""
    files = []
    for sub in SUBPACKAGES:
        folder = os.path.join(repo, sub)
        files += [(sub, os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.endswith('.py')]
    return files


def _already_there(src, dest, copy):
    if os.path.islink(dest):
        return not copy and os.path.realpath(dest) == os.path.realpath(src)
    return copy and os.path.isfile(dest) and filecmp.cmp(src, dest, shallow=False)


def link_into(target, copy=False, force=False, log=print):
    """Place the drop-in files into ``target``; running it again changes nothing.

    Args:
        target (str): Root of a BasicSR-style tree (it holds ``basicsr/{archs,losses,models,data}``).
        copy (bool): Copy the files instead of symlinking them.
        force (bool): Replace other files of the same name.
        log (callable): Receives one line per file (``action destination``).

    Returns:
        list[tuple[str, str]]: (``linked`` | ``copied`` | ``unchanged``, destination) per file.

    Raises:
        UserInputError: ``target`` is not a BasicSR-style tree, or a different file is in the way and
            ``force`` is not set (nothing is changed in that case).
    """
    missing = [p for p in REQUIRED if not os.path.isfile(os.path.join(target, p))]
    if missing:
        raise UserInputError(f'{target} is not a BasicSR-style tree: missing {", ".join(missing)}')
    plan = []
    for sub, src in drop_in_files():
        dest = os.path.join(target, 'basicsr', sub, os.path.basename(src))
        if _already_there(src, dest, copy):
            plan.append(('unchanged', src, dest))
        elif os.path.lexists(dest) and not force:
            raise UserInputError(f'{dest} exists and is not this drop-in; use --force to replace it')
        else:
            plan.append(('copied' if copy else 'linked', src, dest))
    for action, src, dest in plan:
        if action != 'unchanged':
            if os.path.lexists(dest):
                os.remove(dest)
            shutil.copyfile(src, dest) if copy else os.symlink(src, dest)
        log(f'{action:9s} {dest}')
    return [(action, dest) for action, _, dest in plan]
