"""Crash-safe checkpoint files: a save is written beside the target, then renamed over it."""
import hashlib
import json
import os
import tempfile

import torch

from finpercep_basicsr.utils.errors import UserInputError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path):
    """sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_json(path, obj, indent=None):
    """``json.dump`` to ``path`` through a temporary name, so a killed run never leaves a truncated file."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)


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


class CheckpointMismatchError(UserInputError):
    """A checkpoint does not fit the network it is loaded into."""


def describe_state_dict_mismatch(net_state, loaded_state, limit=10):
    """Lines listing missing, unexpected and shape-mismatched keys (at most ``limit`` of each)."""
    missing = sorted(set(net_state) - set(loaded_state))
    unexpected = sorted(set(loaded_state) - set(net_state))
    shapes = sorted(k for k in set(net_state) & set(loaded_state) if net_state[k].shape != loaded_state[k].shape)
    lines = []
    for title, keys in (('missing', missing), ('unexpected', unexpected)):
        if keys:
            more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
            lines.append(f'{title} keys: {", ".join(keys[:limit])}{more}')
    for k in shapes[:limit]:
        lines.append(f'shape of {k}: network {tuple(net_state[k].shape)}, checkpoint {tuple(loaded_state[k].shape)}')
    return lines


def load_state_dict_into(module, path, param_key='params', strict=True, what='checkpoint', label=None):
    """Load one entry of a BasicSR-style checkpoint (``{'params': ..., 'params_ema': ...}``) into ``module``.

    Args:
        module (nn.Module): The bare network (not DDP-wrapped).
        path (str): Checkpoint file.
        param_key (str | None): Entry to load; falls back to ``'params'`` when absent. None tries
            ``params_ema`` then ``params``, then takes the file as a bare state dict.
        strict (bool): Every key and shape must match; otherwise only matching tensors are loaded
            (how a curriculum stage k checkpoint initialises stage k+1).
        what (str): Words for error messages, e.g. ``'reward checkpoint'``.
        label (str | None): How to name the network in errors (default: its class name).

    Returns:
        str | None: The entry that was loaded.

    Raises:
        FileNotFoundError, UserInputError: Missing or unreadable file.
        CheckpointMismatchError: No such entry, or (strict) keys/shapes differ; the message lists them.
    """
    loaded = load_checkpoint(path, what=what)
    keys = [param_key, 'params'] if param_key else ['params_ema', 'params']
    key = next((k for k in keys if k in loaded), None)
    if key is None and param_key:
        raise CheckpointMismatchError(f'{path} has no {param_key!r} entry (it has: {", ".join(map(str, loaded))})')
    state = {k.removeprefix('module.'): v for k, v in (loaded[key] if key else loaded).items()}
    own = module.state_dict()
    problems = describe_state_dict_mismatch(own, state)
    if strict and problems:
        raise CheckpointMismatchError(f'{path} [{key}] does not match {label or type(module).__name__}:\n  '
                                      + '\n  '.join(problems))
    if not strict:
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(state, strict=strict)
    return key
