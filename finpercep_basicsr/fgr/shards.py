"""Sharded FGR builds: disjoint parts of one plan built apart, then merged into the unsharded dataset.

Shard ``K/N`` (1-based, ``1 <= K <= N``) takes the crop tasks ``t`` (position in the plan's task list,
``t = photo index * crops_per_photo + crop index``, after ``max_samples``) with ``t % N == K - 1``, and
writes them into ``<dataroot>/shards/K-of-N`` (resumable like any build; no LMDB or contact sheet).
Samples do not depend on which process builds them (``builder`` seeds every crop from its place in the
plan), so merging the N folders gives the very files an unsharded build writes::

    python scripts/build_fgr.py -opt X.yml --shard 1/2      # on one machine or process
    python scripts/build_fgr.py -opt X.yml --shard 2/2      # on another
    python scripts/build_fgr.py -opt X.yml --merge          # <dataroot>/shards/*-of-2 -> <dataroot>

Shards built on other machines are copied into ``<dataroot>/shards/`` before the merge; the photos must
sit at the same absolute paths there (they are part of the plan fingerprint). The merge refuses a
missing or unfinished shard and a shard of another plan (other options or photos), naming its folder.
"""
import json
import os
import re
import shutil
import time
from collections import namedtuple

from finpercep_basicsr.fgr import store
from finpercep_basicsr.fgr.builder import (PLAN_FILE, SUMMARY_FILE, build_fgr, check_plan, finish_build, prepare,
                                          read_summary)
from finpercep_basicsr.utils.errors import UserInputError

SHARDS_DIR = 'shards'
_FOLDER = re.compile(r'^(\d+)-of-(\d+)$')


class Shard(namedtuple('Shard', ['index', 'count'])):
    """Shard ``index`` of ``count`` (1-based)."""

    def __str__(self):
        return f'{self.index}/{self.count}'

    def folder(self, dataroot):
        return os.path.join(dataroot, SHARDS_DIR, f'{self.index}-of-{self.count}')

    def keeps(self, t):
        return t % self.count == self.index - 1

    def select(self, tasks):
        """This shard's part of the plan's task list."""
        return [task for t, task in enumerate(tasks) if self.keeps(t)]


def parse_shard(spec):
    """``'K/N'`` -> ``Shard(K, N)``.

    Raises:
        UserInputError: Not two integers with ``1 <= K <= N``.
    """
    match = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', str(spec))
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UserInputError(f'--shard {spec!r}: need K/N with integers 1 <= K <= N (1-based), e.g. 1/4')
    return Shard(int(match.group(1)), int(match.group(2)))


def find_shards(dataroot):
    """The shards of the one shard count found under ``<dataroot>/shards``, all of them present.

    Raises:
        UserInputError: No shard folder, folders of several counts, or a missing shard (named).
    """
    base = os.path.join(dataroot, SHARDS_DIR)
    found = [Shard(int(m.group(1)), int(m.group(2))) for m in map(_FOLDER.match, sorted(os.listdir(base)))
             if m] if os.path.isdir(base) else []
    if not found:
        raise UserInputError(f'{base}: no shard folders (K-of-N); build them with build_fgr.py --shard K/N')
    counts = sorted({s.count for s in found})
    if len(counts) > 1:
        raise UserInputError(f'{base}: shards of several counts {counts}; keep the folders of one N only')
    for k in range(1, counts[0] + 1):
        shard = Shard(k, counts[0])
        if not os.path.isdir(shard.folder(dataroot)):
            raise UserInputError(f'shard {shard} is missing: {shard.folder(dataroot)} '
                                 f'(build it with build_fgr.py --shard {shard})')
    return [Shard(k, counts[0]) for k in range(1, counts[0] + 1)]


def _check_shard(shard, folder, fingerprint, plan):
    """The shard's meta entries and summary, once it is shown to be of this plan and finished."""
    try:
        with open(os.path.join(folder, PLAN_FILE)) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError):
        record = {}
    if record.get('fingerprint') != fingerprint:
        raise UserInputError(f'{folder} was built from other options or photos (plan {record.get("fingerprint")}, '
                             f'these options give {fingerprint}); rebuild it with the same option file')
    if record.get('shard') != str(shard):
        raise UserInputError(f'{folder} holds shard {record.get("shard")}, not {shard}')
    entries = store.read_meta(folder)
    summary = read_summary(folder) or {}
    skipped = summary.get('skipped_photos') or {}
    have = {e['name'] for e in entries}
    missing = [n for task in shard.select(plan.tasks()) if plan.photos[task[0]] not in skipped
               for n in plan.task_names(*task) if n not in have]
    if missing or not summary:
        raise UserInputError(f'{folder} is unfinished ({len(missing)} samples missing, e.g. '
                             f'{missing[:1]}); resume it with build_fgr.py --shard {shard}')
    return entries, summary


def _place(src, dst):
    """Hard-link (or copy) ``src`` to ``dst`` through a temp name, so a killed merge leaves no partial file."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return  # linked by an earlier merge (and a rename onto the same file would leave the temp name)
    tmp = f'{dst}.tmp{os.getpid()}.png'
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge_shards(opt, progress=True):
    """Merge ``<dataroot>/shards/K-of-N`` (K = 1..N) into ``<dataroot>``; returns the summary dict.

    The result is the dataset an unsharded build of ``opt`` writes: the same files byte for byte and
    the same sorted ``meta_info.jsonl``; LMDB, contact sheet and summary are rebuilt. The summary lists
    each shard's ``build_rate`` (``shards``) and their combined ``samples_per_minute`` (samples built
    over the shards' summed build time: the rate of one process; N shards at once give about N times it).

    Raises:
        UserInputError: Missing, unfinished or foreign shard (the message names its folder).
    """
    from tqdm import tqdm
    start = time.time()
    dataroot, photos, plan, fingerprint = prepare(opt)
    shards = find_shards(dataroot)
    checked = [(shard, *_check_shard(shard, shard.folder(dataroot), fingerprint, plan)) for shard in shards]
    check_plan(dataroot, fingerprint)
    store.clean_temp_files(dataroot)
    store.make_dirs(dataroot)
    merged = {e['name']: e for e in store.read_meta(dataroot)}
    skipped, notes, rates = {}, {}, []
    total = sum(len(entries) for _, entries, _ in checked)
    with tqdm(total=total, unit='sample', disable=not progress) as bar:
        for shard, entries, summary in checked:
            folder = shard.folder(dataroot)
            for entry in entries:
                for key in store.FGR_KEYS:
                    name = f'{entry["name"]}.png'
                    _place(os.path.join(folder, key, name), os.path.join(dataroot, key, name))
                merged[entry['name']] = entry
                bar.update()
            skipped.update(summary.get('skipped_photos') or {})
            notes.update(summary.get('photo_notes') or {})
            rates.append(dict(summary.get('build_rate') or {}, shard=str(shard), samples=len(entries)))
    entries = sorted(merged.values(), key=lambda e: e['index'])
    # written before the LMDB, which copies it; a reader never sees a sample without its files
    store.write_meta(dataroot, entries)
    built = sum(r.get('built') or 0 for r in rates)
    seconds = sum(r.get('seconds') or 0 for r in rates if r.get('built'))
    summary = finish_build(opt, dataroot, entries, total, skipped, notes, start,
                           {'plan': fingerprint, 'merged_shards': len(shards), 'shards': rates})
    summary['merge_seconds'] = summary.pop('seconds')
    summary['samples_per_minute'] = round(built / seconds * 60, 2) if built and seconds else None
    summary['build_rate'] = {'built': built, 'seconds': round(seconds, 2),
                             'samples_per_minute': summary['samples_per_minute']}
    with open(os.path.join(dataroot, SUMMARY_FILE), 'w') as f:
        json.dump(summary, f, indent=2)
    return summary


def build_or_merge(opt, shard=None, merge=False, progress=True):
    """The whole build of ``opt``, one shard of it (``K/N``, see ``parse_shard``), or the merge of its built
    shards; returns the summary (``scripts/build_fgr.py``)."""
    if shard is not None and merge:
        raise UserInputError('--shard and --merge exclude each other: build the shards first, then merge')
    if merge:
        return merge_shards(opt, progress=progress)
    return build_fgr(opt, progress=progress, shard=None if shard is None else parse_shard(shard))
