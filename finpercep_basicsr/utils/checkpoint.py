"""Crash-safe checkpoint files: a save is written beside the target, then renamed over it."""
import os
import tempfile

import torch

from finpercep_basicsr.utils.errors import UserInputError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj, path):
    """``torch.save`` that never leaves a truncated file at ``path``.

    The object is written to a temporary file in the same folder, flushed to disk and renamed over
    ``path`` (an atomic replace on POSIX and Windows), so a crash mid-save keeps the previous file.

    Args:
        obj: Anything ``torch.save`` accepts.
        path (str): Destination file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def load_checkpoint(path, what='checkpoint'):
    """Load a checkpoint on the CPU with ``weights_only=True`` (no pickled code runs).

    Args:
        path (str): File to read.
        what (str): Words for the error message, e.g. ``'resume state'``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UserInputError: The file is truncated or not a torch checkpoint; the message names the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise UserInputError(f'cannot read {what} {path}: {err}') from err
