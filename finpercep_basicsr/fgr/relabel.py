"""Relabel a stored FGR set under other label options, without rerunning its SR models.

A sample's label depends only on its stored 8-bit ``syn``, ``sr`` and ``gt`` images and its mask (``fgr.labels``), so
another label formula (pixel-only distance, another normalisation) is one pass over the files. The new set holds the
same ``gt``, ``sr``, ``syn``, ``lq`` and ``mask`` files (hard links where the file system allows, else copies), new
``pdm`` maps, and the meta lines with the new stats and ``labels`` (the options used). A sample swapped into another
SR image (meta ``swap_base``) is labelled everywhere, as its build did. No LMDB is written: read the set from its
folders (``io_backend: disk``).

The pass is resumable: finished samples (meta lines) are skipped. ``relabel.json`` records the source and the
options, and a rerun with others into the same folder is refused.
"""
import json
import os
import shutil

from finpercep_basicsr.fgr import store
from finpercep_basicsr.fgr.labels import LabelMaker
from finpercep_basicsr.utils.checkpoint import atomic_write_json
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import decode_map, read_image

RELABEL_FILE = 'relabel.json'
LINKED_KEYS = ('gt', 'sr', 'syn', 'lq', 'mask')


def _link(src, dst):
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        tmp = dst + '.tmp'
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _check_target(src, out, record):
    if os.path.abspath(src) == os.path.abspath(out):
        raise UserInputError(f'relabel: the output folder must differ from the source {src}')
    marker = os.path.join(out, RELABEL_FILE)
    if os.path.isfile(marker):
        with open(marker) as f:
            previous = json.load(f)
        if previous != record:
            raise UserInputError(f'{out} was relabelled from {previous.get("source")} with labels '
                                 f'{previous.get("labels")}; choose another output folder')
    elif store.read_meta(out):
        raise UserInputError(f'{out} already holds an FGR set that was not relabelled; choose another output folder')


def relabel_fgr(src, out, labels_opt, progress=True):
    """Write ``src``'s samples with labels made by ``LabelMaker(labels_opt)`` into ``out``; returns a summary dict.

    Raises:
        UserInputError: ``src`` holds no samples or misses a file, or ``out`` holds another set.
    """
    from tqdm import tqdm
    entries = store.read_meta(src)
    if not entries:
        raise UserInputError(f'{src}: no samples (no {store.META_NAME} lines)')
    record = {'source': os.path.abspath(src), 'labels': labels_opt}
    _check_target(src, out, record)
    store.make_dirs(out)
    store.clean_temp_files(out)
    atomic_write_json(os.path.join(out, RELABEL_FILE), record)
    done = {e['name'] for e in store.read_meta(out)}
    todo = [e for e in entries if e['name'] not in done]
    keys = [k for k in LINKED_KEYS if os.path.isdir(os.path.join(src, k))]
    maker = LabelMaker(labels_opt)
    with open(os.path.join(out, store.META_NAME), 'a') as handle:
        for entry in tqdm(todo, desc=f'relabel {os.path.basename(os.path.normpath(out))}', unit='sample',
                          disable=not progress):
            name = entry['name']
            paths = {k: os.path.join(src, k, f'{name}.png') for k in keys}
            missing = [p for k, p in paths.items() if not os.path.isfile(p)]
            if missing:
                raise UserInputError(f'{src}: sample {name} misses {missing}')
            syn, sr, gt = (read_image(paths[k]) for k in ('syn', 'sr', 'gt'))
            with open(paths['mask'], 'rb') as f:
                mask = decode_map(f.read(), paths['mask'])
            pdm, stats = maker.label(syn, sr, gt, mask, everywhere=bool(entry.get('swap_base')))
            for key, path in paths.items():
                _link(path, os.path.join(out, key, f'{name}.png'))
            store.write_label(out, name, pdm)
            store.append_meta(handle, {**entry, **stats, 'labels': labels_opt})
    store.write_meta(out, sorted(store.read_meta(out), key=lambda e: e['name']))
    return {'source': src, 'dataroot': out, 'samples': len(entries), 'relabelled_now': len(todo),
            'labels': labels_opt}
