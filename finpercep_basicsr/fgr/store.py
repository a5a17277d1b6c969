"""The FGR folder on disk: crash-safe sample writes, the ``meta_info.jsonl`` log, and its LMDB copy.

Layout (the contract every reader relies on)::

    <root>/{gt,sr,syn}/<name>.png   8-bit RGB
    <root>/lq/<name>.png            8-bit RGB, the degraded input the SR image was made from (1/scale size)
    <root>/mask/<name>.png          8-bit, 255 = region taken from SR
    <root>/pdm/<name>.png           16-bit label map M_gt in [0, 1]
    <root>/meta_info.jsonl          one JSON object per finished sample (``name`` + provenance)
    <root>/lmdb/<key>.lmdb          BasicSR LMDBs of each folder (keys = names), plus meta_info.jsonl

A sample is finished when its meta line exists; its files are written under temporary names and
renamed first, so a kill at any point leaves either a finished sample or files that a resumed build
rewrites with the same bytes.
"""
import contextlib
import json
import os
import shutil
import struct

import cv2
import numpy as np

from finpercep_basicsr.utils.image_io import write_map16, write_rgb8

IMAGE_KEYS = ('gt', 'sr', 'syn', 'lq')
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


def _staged(root, key, name):
    """(temp path, final path) of one file of a sample.

    The temp name keeps the .png extension (OpenCV picks the encoder from it) and carries the pid, so two writers
    of one sample (e.g. a resumed build and a dying worker) never share a file.
    """
    return (os.path.join(root, key, f'{name}{_TMP_TAG}{os.getpid()}.png'), os.path.join(root, key, f'{name}.png'))


def write_sample(root, name, sample):
    """Write one sample's six files atomically (each to a temp name, then renamed into place).

    Args:
        sample (dict): ``gt``, ``sr``, ``syn`` float32 (H, W, 3), ``lq`` float32 (H / scale, W / scale, 3) and
            ``mask``, ``pdm`` float32 (H, W), all in [0, 1].
    """
    staged = []
    for key in FGR_KEYS:
        tmp, final = _staged(root, key, name)
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


def write_image(root, key, name, image):
    """Write one 8-bit RGB file of a finished sample atomically (``write_sample`` writes all of a new one's)."""
    tmp, final = _staged(root, key, name)
    write_rgb8(tmp, image)
    os.replace(tmp, final)


def write_label(root, name, pdm):
    """Write one sample's label map atomically (``fgr.relabel``: a new label beside linked images)."""
    tmp, final = _staged(root, 'pdm', name)
    write_map16(tmp, pdm)
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


def stored_keys(root):
    """The folders of ``root`` an LMDB copies: every FGR key, but the LQ of a set made before it was stored (its build
    command, rerun, adds it)."""
    return tuple(k for k in FGR_KEYS if k != 'lq' or os.path.isdir(os.path.join(root, k)))


def _lmdb_is_current(root):
    meta_lmdb = os.path.join(root, LMDB_DIR, META_NAME)
    # an LMDB made before a key was stored (the LQ) is stale too
    if not os.path.isfile(meta_lmdb) or not all(os.path.isdir(os.path.join(root, LMDB_DIR, f'{key}.lmdb'))
                                                for key in stored_keys(root)):
        return False
    with open(meta_lmdb, 'rb') as a, open(os.path.join(root, META_NAME), 'rb') as b:
        return a.read() == b.read()


def png_shape(content):
    """(H, W, C) from a PNG header, without decoding the pixels."""
    if content[:8] != b'\x89PNG\r\n\x1a\n' or content[12:16] != b'IHDR':
        raise ValueError('not a PNG file')
    width, height = struct.unpack('>II', content[16:24])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[content[25]]
    return height, width, channels


def build_lmdb(root, names):
    """Make ``<root>/lmdb/<key>.lmdb`` for every folder with BasicSR's ``LmdbMaker``.

    The values are the folder's PNG files byte for byte (no re-encoding, so both backends decode the
    very same bytes; the compression field of BasicSR's ``meta_info.txt`` is informational). Built in
    ``<root>/lmdb.tmp`` and swapped in by renames, so a kill never leaves a half-written LMDB where a
    reader looks. A no-op when the LMDB already matches ``meta_info.jsonl``.

    Returns:
        bool: True when the LMDB was (re)built.
    """
    from basicsr.utils.lmdb_util import LmdbMaker
    if _lmdb_is_current(root):
        return False
    tmp = os.path.join(root, LMDB_DIR + _TMP_TAG)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for key in stored_keys(root):
        paths = [os.path.join(root, key, f'{n}.png') for n in names]
        # the map is virtual (sparse): a generous bound costs nothing, an overflow aborts the build
        map_size = 2 * sum(os.path.getsize(p) for p in paths) + 8192 * len(paths) + (64 << 20)
        maker = LmdbMaker(os.path.join(tmp, f'{key}.lmdb'), map_size=map_size)
        for name, path in zip(names, paths):
            with open(path, 'rb') as f:
                content = f.read()
            maker.put(content, name, png_shape(content))
        maker.close()
    shutil.copyfile(os.path.join(root, META_NAME), os.path.join(tmp, META_NAME))
    final, old = os.path.join(root, LMDB_DIR), os.path.join(root, LMDB_DIR + '.old')
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return True
