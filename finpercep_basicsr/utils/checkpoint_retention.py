"""``logger.keep_checkpoints``: keep the newest N numbered checkpoints of a run, delete the older ones.

BasicSR writes ``models/<net>_<iter>.pth`` and ``training_states/<iter>.state`` at every
``logger.save_checkpoint_freq`` and keeps them all; a full RRDBNet fine-tune writes ~260 MB per save.
``*_latest.pth``, the ``best_*`` checkpoints and other files are never touched. Old files go only
after the new state is written (atomically), so a crash at any point leaves a resumable run.
"""
import os
import re

from finpercep_basicsr.utils.errors import UserInputError

_NUMBERED_NET = re.compile(r'^.+_(?P<iter>\d+)\.pth$')
_NUMBERED_STATE = re.compile(r'^(?P<iter>\d+)\.state$')


def check_keep_checkpoints(opt):
    """The validated ``logger.keep_checkpoints`` of an option dict: a positive int, or None (keep all)."""
    keep = (opt.get('logger') or {}).get('keep_checkpoints')
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise UserInputError(f'logger.keep_checkpoints must be a positive integer or null (keep all), got {keep!r}')
    return keep


def _numbered(folder, pattern):
    """``{iteration: [paths]}`` of the files in ``folder`` whose names match ``pattern``."""
    found = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            match = pattern.match(name)
            if match:
                found.setdefault(int(match['iter']), []).append(os.path.join(folder, name))
    return found


def numbered_training_states(states_dir):
    """``{iteration: [path]}`` of the ``<iter>.state`` files in ``states_dir`` (empty if it does not exist)."""
    return _numbered(states_dir, _NUMBERED_STATE)


def prune_checkpoints(models_dir, states_dir, keep):
    """Delete numbered checkpoints and states of all but the ``keep`` newest iterations; returns the deleted paths."""
    if keep is None:
        return []
    nets, states = _numbered(models_dir, _NUMBERED_NET), numbered_training_states(states_dir)
    newest = sorted(set(nets) | set(states), reverse=True)[:keep]
    deleted = []
    for found in (nets, states):
        for iteration, paths in found.items():
            if iteration not in newest:
                for path in paths:
                    os.remove(path)
                    deleted.append(path)
    return sorted(deleted)
