"""The FGR folder on disk: crash-safe sample writes, the ``meta_info.jsonl`` log, and its LMDB copy.

Layout (the contract every reader relies on)::

    <root>/{gt,sr,syn}/<name>.png   8-bit RGB
    <root>/mask/<name>.png          8-bit, 255 = region taken from SR
    <root>/pdm/<name>.png           16-bit label map M_gt in [0, 1]
    <root>/meta_info.jsonl          one JSON object per finished sample (``name`` + provenance)
    <root>/lmdb/<key>.lmdb          BasicSR LMDBs of each folder (keys = names), plus meta_info.jsonl

A sample is finished when its meta line exists; its files are written under temporary names and
renamed first, so a kill at any point leaves either a finished sample or files that a resumed build
rewrites with the same bytes.
"""
import contextlib
import io
import json
import os
import shutil

import cv2
import numpy as np

from finpercep_basicsr.utils.image_io import write_map16, write_rgb8

IMAGE_KEYS = ('gt', 'sr', 'syn')
MAP_KEYS = ('mask', 'pdm')
FGR_KEYS = IMAGE_KEYS + MAP_KEYS
META_NAME = 'meta_info.jsonl'
LMDB_DIR = 'lmdb'
_TMP_TAG = '.tmp'


def make_dirs(root):
    for key in FGR_KEYS:
        os.makedirs(os.path.join(root, key), exist_ok=True)


def clean_temp_files(root):
    """Remove temporary files and folders a killed build may have left; finished data is untouched."""
    for key in FGR_KEYS:
        folder = os.path.join(root, key)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if _TMP_TAG in name:
                    os.remove(os.path.join(folder, name))
    for name in (LMDB_DIR + _TMP_TAG, LMDB_DIR + '.old'):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(root, META_NAME + _TMP_TAG))


def write_sample(root, name, sample):
    """Write one sample's five files atomically (each to a temp name, then renamed into place).

    Args:
        sample (dict): ``gt``, ``sr``, ``syn`` float32 (H, W, 3) and ``mask``, ``pdm`` float32 (H, W),
            all in [0, 1].
    """
    staged = []
    for key in FGR_KEYS:
        final = os.path.join(root, key, f'{name}.png')
        # the temp name keeps the .png extension (OpenCV picks the encoder from it) and carries the pid,
        # so two writers of one sample (e.g. a resumed build and a dying worker) never share a file
        tmp = os.path.join(root, key, f'{name}{_TMP_TAG}{os.getpid()}.png')
        if key in IMAGE_KEYS:
            write_rgb8(tmp, sample[key])
        elif key == 'mask':
            if not cv2.imwrite(tmp, np.round(np.clip(sample[key], 0, 1) * 255).astype(np.uint8)):
                raise OSError(f'cannot write {tmp}')
        else:
            write_map16(tmp, sample[key])
        staged.append((tmp, final))
    for tmp, final in staged:
        os.replace(tmp, final)


def read_meta(root):
    """Finished samples' meta entries; a torn last line (killed mid-write) is dropped."""
    path = os.path.join(root, META_NAME)
    if not os.path.isfile(path):
        return []
    entries = []
    with open(path) as f:
        for line in f:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def append_meta(handle, entry):
    """Append one finished sample's line and push it to disk before the next sample starts."""
    handle.write(json.dumps(entry, sort_keys=True) + '\n')
    handle.flush()
    os.fsync(handle.fileno())


def write_meta(root, entries):
    """Rewrite ``meta_info.jsonl`` atomically with the given entries (used to drop torn lines and sort)."""
    path = os.path.join(root, META_NAME)
    tmp = path + _TMP_TAG
    with open(tmp, 'w') as f:
        for entry in entries:
            f.write(json.dumps(entry, sort_keys=True) + '\n')
    os.replace(tmp, path)


def _lmdb_is_current(root):
    meta_lmdb = os.path.join(root, LMDB_DIR, META_NAME)
    if not os.path.isfile(meta_lmdb):
        return False
    with open(meta_lmdb, 'rb') as a, open(os.path.join(root, META_NAME), 'rb') as b:
        return a.read() == b.read()


def build_lmdb(root, names, compress_level=1):
    """Make ``<root>/lmdb/<key>.lmdb`` for every folder with BasicSR's ``make_lmdb_from_imgs``.

    Built in ``<root>/lmdb.tmp`` and swapped in by renames, so a kill never leaves a half-written LMDB
    where a reader looks. A no-op when the LMDB already matches ``meta_info.jsonl``.

    Returns:
        bool: True when the LMDB was (re)built.
    """
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    if _lmdb_is_current(root):
        return False
    tmp = os.path.join(root, LMDB_DIR + _TMP_TAG)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for key in FGR_KEYS:
        files = [f'{n}.png' for n in names]
        # BasicSR sizes the map from the first image only, which overflows on small or uneven files;
        # the map is virtual (sparse), so a generous bound costs nothing
        data_bytes = sum(os.path.getsize(os.path.join(root, key, f)) for f in files)
        map_size = 4 * data_bytes + 8192 * len(files) + (64 << 20)
        # BasicSR prints per-image progress; keep the build's own log readable
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            make_lmdb_from_imgs(os.path.join(root, key), os.path.join(tmp, f'{key}.lmdb'), files, list(names),
                                compress_level=compress_level, map_size=map_size)
    shutil.copyfile(os.path.join(root, META_NAME), os.path.join(tmp, META_NAME))
    final, old = os.path.join(root, LMDB_DIR), os.path.join(root, LMDB_DIR + '.old')
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return True
