"""Build an FGR set: photos -> HR crops -> degraded LR -> SR sources -> swap masks -> I_syn + M_gt.

The work is planned up front: photo ``p`` (sorted list), crop ``c``, SR source ``s`` and mask ``k``
give sample index ``i = ((p * crops_per_photo + c) * num_sources + s) * masks_per_sr + k`` and seed
``seed + i``; a crop's scale, box and degradation preset use the seed of its first sample. So the set
depends on the options and the photos only, not on the worker count, on how often the build was
resumed, or on how it was split into shards (``finpercep_basicsr/fgr/shards.py``).
One task = one crop (all its SR sources and masks); finished samples are skipped on resume.

Options beyond the basic recipe, each absent = the old behaviour (same files, same meta lines):
``photos.scales`` (a crop is cut from the photo resized by a scale drawn per crop; meta ``crop_scale``,
``crop_box`` in the resized photo) and ``degradation.mix`` (a weighted preset drawn per crop; meta
``degradation``), and a source's ``swap_base`` (the options of another SR source: its output replaces the GT as
the image the swapped regions go into, see ``fgr.labels``; meta ``swap_base``; sources that share one base run it
once per crop).
"""
import ctypes
import hashlib
import json
import os
import re
import signal
import sys
import time
import warnings
from copy import deepcopy

import cv2
import numpy as np

from finpercep_basicsr.fgr import store
from finpercep_basicsr.fgr.crop_photos import (crop_scales, fitting_scales, list_photos, load_photo, resize_photo,
                                               select_split)
from finpercep_basicsr.fgr.labels import LabelMaker, quantize8
from finpercep_basicsr.fgr.masks import choose_kind, kind_options, make_mask
from finpercep_basicsr.fgr.photos import PhotoSkipped
from finpercep_basicsr.utils.checkpoint import atomic_write_json
from finpercep_basicsr.utils.errors import UserInputError

# options that change how a build runs, not what it produces (left out of the plan fingerprint)
RUN_KEYS = ('num_workers', 'max_samples', 'lmdb', 'contact_sheet', 'name', 'allow_heldout_families')
PLAN_FILE = 'build_plan.json'
SUMMARY_FILE = 'build_summary.json'
# a fixed tag keeps the scale draw independent of the crop box drawn from the same crop seed
_SCALE_STREAM = 0x7363616C


def _safe_stem(path):
    return re.sub(r'[^A-Za-z0-9]+', '-', os.path.splitext(os.path.basename(path))[0]).strip('-')[:40] or 'photo'


class BuildPlan:
    """The deterministic list of crops and sample names of a build.

    Args:
        opt (dict): Build options (``photos``, ``sr_sources``, ``masks_per_sr``, ``seed``).
        photos (list[str]): Sorted photo paths.
    """

    def __init__(self, opt, photos):
        self.photos = photos
        self.crops = int(opt['photos'].get('crops_per_photo', 1))
        self.crop_size = int(opt['photos']['crop_size'])
        self.sources = [s.get('name', s['type']) for s in opt['sr_sources']]
        if len(set(self.sources)) != len(self.sources) or not self.sources:
            raise UserInputError(f'sr_sources: give each source a distinct name, got {self.sources}')
        self.masks_per_sr = int(opt.get('masks_per_sr', 1))
        self.seed = int(opt.get('seed', 0))
        self.per_crop = len(self.sources) * self.masks_per_sr
        self.scales = crop_scales(opt['photos'])
        self.max_samples = opt.get('max_samples')

    def tasks(self):
        """(photo index, crop index) of every crop, in order; ``max_samples`` keeps the crops holding the first N."""
        tasks = [(p, c) for p in range(len(self.photos)) for c in range(self.crops)]
        if self.max_samples:
            tasks = tasks[:-(-int(self.max_samples) // self.per_crop)]
        return tasks

    def crop_seed(self, p, c):
        return self.seed + self.sample_index(p, c, 0, 0)

    def sample_index(self, p, c, s, k):
        return ((p * self.crops + c) * len(self.sources) + s) * self.masks_per_sr + k

    def sample_name(self, p, c, s, k):
        return f'{p:05d}_{_safe_stem(self.photos[p])}_c{c:02d}_{self.sources[s]}_m{k:02d}'

    def task_names(self, p, c):
        return [self.sample_name(p, c, s, k) for s in range(len(self.sources)) for k in range(self.masks_per_sr)]


def plan_fingerprint(opt, photos):
    """Hash of everything that decides the samples; a resume with a different plan is refused."""
    content = {k: v for k, v in opt.items() if k not in RUN_KEYS and k != 'dataroot'}
    payload = json.dumps({'opt': content, 'photos': photos}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class CropWorker:
    """Makes and writes all samples of one crop; built once per worker process.

    Args:
        opt (dict): Build options.
        photos (list[str]): Sorted photo paths.
    """

    def __init__(self, opt, photos):
        from finpercep_basicsr.fgr.degradation import DegradationMix
        from finpercep_basicsr.fgr.sources import build_sr_source
        self.opt, self.plan = opt, BuildPlan(opt, photos)
        self.root = opt['dataroot']
        self.labels = LabelMaker(opt.get('labels'))
        self.masks_opt = opt.get('masks') or {}
        self.degradations = DegradationMix(deepcopy(opt.get('degradation')))
        specs = [deepcopy(s) for s in opt['sr_sources']]
        bases = [s.pop('swap_base', None) for s in specs]
        self.sources = [build_sr_source(s) for s in specs]
        self.base_keys = [None if b is None else json.dumps(b, sort_keys=True) for b in bases]
        self.bases = {k: build_sr_source(b) for k, b in zip(self.base_keys, bases) if k is not None}
        # the last photo and its resized copies: tasks come in photo order, and large photos are slow to decode
        self._cache = (None, None, None, {})

    def _photo(self, path, scale):
        if self._cache[0] != path:
            self._cache = (path, *load_photo(path, self.plan.crop_size, self.plan.scales), {})
        _, photo, notes, resized = self._cache
        if scale not in resized:
            resized.clear()
            resized[scale] = resize_photo(photo, scale)
        return resized[scale], notes

    def crop(self, path, seed):
        """HR crop of a photo; returns (crop, box (top, left, h, w) in the resized photo, scale, notes)."""
        scale = 1.0
        if self.plan.scales != [1.0]:
            self._photo(path, 1.0)  # loads (or skips) the photo
            fitting = fitting_scales(self._cache[1].shape, self.plan.crop_size, self.plan.scales)
            scale = fitting[int(np.random.default_rng([int(seed), _SCALE_STREAM]).integers(len(fitting)))]
        photo, notes = self._photo(path, scale)
        h, w = photo.shape[:2]
        size = self.plan.crop_size
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        return photo[top:top + size, left:left + size], (top, left, size, size), scale, notes

    def degraded_crop(self, task):
        """The HR crop of ``task = (p, c)`` and its LQ, which depend on the crop's seed alone.

        Returns:
            tuple: (hr, lq, box, crop scale, degradation preset, photo notes).

        Raises:
            PhotoSkipped: The photo cannot give a crop.
        """
        from finpercep_basicsr.fgr.degradation import degrade
        p, c = task
        crop_seed = self.plan.crop_seed(p, c)
        hr, box, scale, notes = self.crop(self.plan.photos[p], crop_seed)
        hr = quantize8(hr)
        preset, degradation_opt = self.degradations.choose(crop_seed)
        return hr, degrade(hr, degradation_opt, crop_seed), box, scale, preset, notes

    def __call__(self, task, skip_names=()):
        """Build crop ``task = (p, c)``; returns (task, meta entries written, skip reason, notes)."""
        p, c = task
        path = self.plan.photos[p]
        try:
            hr, lq, box, scale, preset, notes = self.degraded_crop(task)
        except PhotoSkipped as err:
            return task, [], str(err), []
        # provenance keys only where the option is used, so builds without it keep their exact meta lines
        extra = {}
        if self.plan.scales != [1.0]:
            extra['crop_scale'] = scale
        if self.degradations.mixed:
            extra['degradation'] = preset
        entries, base_images = [], {}
        for s, source in enumerate(self.sources):
            names = [self.plan.sample_name(p, c, s, k) for k in range(self.plan.masks_per_sr)]
            if all(n in skip_names for n in names):
                continue
            sr = self._upscale(source, lq, hr.shape)
            base_key = self.base_keys[s]
            if base_key is not None and base_key not in base_images:
                base_images[base_key] = self._upscale(self.bases[base_key], lq, hr.shape)
            base = base_images.get(base_key)
            # what made the SR image (model id, wheel and version, checkpoint and its sha256, ...)
            meta = {**extra, 'sr_provenance': source.provenance}
            if base is not None:
                meta['swap_base'] = self.bases[base_key].name
            for k, name in enumerate(names):
                if name in skip_names:
                    continue
                seed = self.plan.seed + self.plan.sample_index(p, c, s, k)
                entries.append(self._sample(name, seed, hr, lq, sr, path, box, source.name, meta, base))
        return task, entries, None, notes

    @staticmethod
    def _upscale(source, lq, hr_shape):
        sr = np.asarray(source(lq), np.float32)
        if sr.shape != hr_shape:
            raise UserInputError(f'SR source {source.name}: output {sr.shape} for LR {lq.shape} does not match '
                                 f'the HR crop {hr_shape} (check degradation scale vs the source scale)')
        return sr

    def _sample(self, name, seed, hr, lq, sr, path, box, source_name, extra, base=None):
        rng = np.random.default_rng(seed)
        # SAM masks cover the full-size photo, so a crop of a resized photo uses the other kinds
        kind = choose_kind(self.masks_opt, rng, photo=path if extra.get('crop_scale', 1.0) == 1.0 else None)
        mask = make_mask(kind, hr.shape[:2], rng, image=hr, opt=kind_options(self.masks_opt, kind), photo=path,
                         box=box)
        sample = self.labels(sr, hr, mask, base=base)
        store.write_sample(self.root, name, dict(sample, lq=lq))
        return dict(name=name, index=int(seed - self.plan.seed), photo=path, sr_model=source_name, mask_kind=kind,
                    seed=int(seed), crop_box=list(box), **extra, **sample['stats'])


_WORKER = None


def _die_with_parent():
    """Linux: a worker gets SIGKILL when the build process dies, so a killed build leaves no writers."""
    if sys.platform.startswith('linux'):
        try:
            ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


def _init_worker(opt, photos, threads):
    global _WORKER
    import torch
    _die_with_parent()
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    _WORKER = CropWorker(opt, photos)


def _run_task(args):
    task, skip = args
    return _WORKER(task, skip)


def _iterate_results(opt, photos, worker, todo, num_workers, threads):
    """Yield task results, in-process (``num_workers`` 0) or from a spawn pool."""
    if num_workers <= 0:
        for task, skip in todo:
            yield worker(task, skip)
        return
    import multiprocessing
    # spawn: the workers build their own torch/ncnn state instead of inheriting a forked copy
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(opt, photos, threads)) as pool:
        yield from pool.imap_unordered(_run_task, todo, chunksize=1)


def check_plan(root, fingerprint, shard=None):
    """Record the plan of a new folder, or refuse a folder built from another plan (or as another shard)."""
    path = os.path.join(root, PLAN_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old.get('fingerprint') != fingerprint:
            raise UserInputError(f'{root} was built with other options or photos (plan {old.get("fingerprint")}, '
                                 f'now {fingerprint}); use a new dataroot, or the old options to resume')
        if old.get('shard') != (None if shard is None else str(shard)):
            raise UserInputError(f'{root} holds shard {old.get("shard")}, not {shard}')
    else:
        record = {'fingerprint': fingerprint}
        if shard is not None:
            record['shard'] = str(shard)
        atomic_write_json(path, record)


def read_summary(root):
    """The folder's last ``build_summary.json``, or None."""
    try:
        with open(os.path.join(root, SUMMARY_FILE)) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def check_heldout_families(opt):
    """A training build (``split: train``) may not use the evaluation-only SR families (SPAN, Real-CUGAN), unless
    ``allow_heldout_families: true`` says the held-out measurement is given up on purpose."""
    from finpercep_basicsr.fgr.sources.ncnn_models import EVALUATION_ONLY_FAMILIES, evaluation_only_models
    if opt.get('split', 'train') != 'train' or opt.get('allow_heldout_families'):
        return
    for source in opt['sr_sources']:
        models = evaluation_only_models(source)
        if models:
            raise UserInputError(
                f'sr_sources[{source.get("name", source.get("type"))}]: {", ".join(models)} is of a held-out family '
                f'({", ".join(EVALUATION_ONLY_FAMILIES)}: evaluation only, so the map is measured on GAN texture it '
                f'never saw); build it with split: val, or set allow_heldout_families: true to train on it')


def prepare(opt):
    """The resolved dataroot, photos, plan and plan fingerprint of a build's options.

    ``{split}`` in ``dataroot`` names the split's folder, so one option file builds train and val.
    """
    root = os.path.abspath(os.path.expanduser(str(opt['dataroot']).replace('{split}', str(opt.get('split', 'train')))))
    check_heldout_families(opt)
    photos = select_split(list_photos(opt['photos'].get('folders')), opt)
    return root, photos, BuildPlan(opt, photos), plan_fingerprint(opt, photos)


def build_fgr(opt, progress=True, shard=None):
    """Build (or resume) the FGR set described by ``opt``; returns the summary dict.

    Args:
        opt (dict): Build options (see ``options/data/fgr_build_default.yml``).
        progress (bool): Show a tqdm bar.
        shard (finpercep_basicsr.fgr.shards.Shard | None): Build only this shard's crops, into its own
            folder under the dataroot (no LMDB, no contact sheet: the merge makes them).
    """
    import torch
    from tqdm import tqdm
    opt = deepcopy(opt)
    start = time.time()
    dataroot, photos, plan, fingerprint = prepare(opt)
    tasks = plan.tasks()
    root = dataroot
    if shard is not None:
        root = shard.folder(dataroot)
        tasks = shard.select(tasks)
        opt.update(lmdb={'enabled': False}, contact_sheet={'num': 0})
    opt['dataroot'] = root
    os.makedirs(root, exist_ok=True)
    check_plan(root, fingerprint, shard)
    store.clean_temp_files(root)
    store.make_dirs(root)
    entries = store.read_meta(root)
    store.write_meta(root, entries)
    done = {e['name'] for e in entries}
    todo = [(t, frozenset(n for n in plan.task_names(*t) if n in done)) for t in tasks]
    todo = [(t, skip) for t, skip in todo if len(skip) < plan.per_crop]
    threads, old_threads = int(opt.get('torch_threads', 1)), torch.get_num_threads()
    torch.set_num_threads(threads)
    skipped, notes, built = {}, {}, 0
    try:
        # built in the parent too: a bad SR source or backbone fails here with its own message
        worker = CropWorker(opt, photos)
        add_missing_lq(worker, root, tasks, done, progress)
        bar = tqdm(total=sum(plan.per_crop - len(s) for _, s in todo), unit='sample', disable=not progress)
        with open(os.path.join(root, store.META_NAME), 'a') as meta:
            for (p, _), new, reason, photo_notes in _iterate_results(opt, photos, worker, todo,
                                                                     int(opt.get('num_workers', 0)), threads):
                for entry in new:
                    store.append_meta(meta, entry)
                built += len(new)
                bar.update(plan.per_crop if reason else len(new))
                if reason and photos[p] not in skipped:
                    skipped[photos[p]] = reason
                    warnings.warn(f'skipped photo {reason}')
                if photo_notes and photos[p] not in notes:
                    notes[photos[p]] = photo_notes
                    warnings.warn(f'{photos[p]}: {"; ".join(photo_notes)}')
        bar.close()
    finally:
        torch.set_num_threads(old_threads)
    entries = sorted(store.read_meta(root), key=lambda e: e['index'])
    store.write_meta(root, entries)
    extra = {'plan': fingerprint} if shard is None else {'plan': fingerprint, 'shard': str(shard)}
    return finish_build(opt, root, entries, built, skipped, notes, start, extra)


def add_missing_lq(worker, root, tasks, done, progress=True):
    """Write ``lq/<name>.png`` for finished samples of an older build that lack it.

    A crop's LQ depends on its seed alone, so recomputing it needs no SR model: rerunning a build command on a
    set made before the LQ was stored adds it. Returns the number of LQ files written.
    """
    from tqdm import tqdm
    folder = os.path.join(root, 'lq')
    present = {n[:-4] for n in os.listdir(folder) if n.endswith('.png')} if os.path.isdir(folder) else set()
    lacking = done - present
    if not lacking:
        return 0
    todo = [(t, [n for n in worker.plan.task_names(*t) if n in lacking]) for t in tasks]
    todo = [(t, names) for t, names in todo if names]
    written = 0
    for task, names in tqdm(todo, unit='crop', desc='LQ of finished samples', disable=not progress):
        lq = worker.degraded_crop(task)[1]
        for name in names:
            store.write_image(root, 'lq', name, lq)
        written += len(names)
    return written


def finish_build(opt, root, entries, built, skipped, notes, start, extra=None):
    """LMDB, contact sheet and the summary (also saved as ``build_summary.json``).

    ``samples_per_minute`` is the rate of this run (``built_now`` over its wall time); ``build_rate``
    that of the last run that built samples (kept from the old summary when this run built none, so a
    rerun of a finished folder keeps its measured rate); ``extra`` is added to the summary.
    """
    from finpercep_basicsr.fgr.contact_sheet import make_contact_sheet
    if not entries:
        raise UserInputError(f'no FGR sample could be built in {root} (skipped photos: {skipped})')
    names = [e['name'] for e in entries]
    lmdb_opt = opt.get('lmdb') or {}
    lmdb_built = lmdb_opt.get('enabled', True) and store.build_lmdb(root, names)
    sheet_opt = opt.get('contact_sheet') or {}
    sheet = None
    if sheet_opt.get('num', 8):
        sheet = make_contact_sheet(root, entries, os.path.join(root, 'contact_sheet.png'), sheet_opt.get('num', 8),
                                   sheet_opt.get('tile', 192))
    seconds = time.time() - start
    summary = {
        'dataroot': root, 'samples': len(entries), 'built_now': built, 'skipped_photos': skipped,
        'photo_notes': notes, 'seconds': round(seconds, 2),
        'samples_per_minute': round(built / seconds * 60, 2) if built else None,
        'lmdb': os.path.join(root, store.LMDB_DIR) if lmdb_opt.get('enabled', True) else None,
        'lmdb_rebuilt': bool(lmdb_built), 'contact_sheet': sheet, **(extra or {}),
    }
    rate = {'built': built, 'seconds': summary['seconds'], 'samples_per_minute': summary['samples_per_minute']}
    if not built:
        rate = (read_summary(root) or {}).get('build_rate') or rate
    summary['build_rate'] = rate
    with open(os.path.join(root, SUMMARY_FILE), 'w') as f:
        json.dump(summary, f, indent=2)
    return summary


def load_build_options(path, **overrides):
    """The build options of the YAML file ``path``, with the ``overrides`` that are not None applied.

    Raises:
        UserInputError: A missing or unreadable file, or no ``dataroot``, ``photos`` or ``sr_sources``.
    """
    from finpercep_basicsr.utils.option_check import load_option_file
    opt = load_option_file(path)
    opt.update({key: value for key, value in overrides.items() if value is not None})
    for key in ('dataroot', 'photos', 'sr_sources'):
        if not opt.get(key):
            raise UserInputError(f'{path}: option {key} is required')
    return opt
