"""Generalisation benchmark of a reward model: held-out FGR families and a hacking check, beside trivial detectors.

Every detector (the reward network, a constant map, the Laplacian-energy detector and its negation,
the blur detector; see ``metrics.trivial_detectors``) answers ``images -> [(score, map), ...]``,
and one set of metrics (``metrics.finpercep_rm_metric``) judges them all on the same images.

FGR part (``evaluate_fgr``), per SR family (``sr_model`` of ``meta_info.jsonl``, optionally
regrouped) and pooled:

- ``map_auc``: pixel ROC-AUC of the map of the syn image against the swap mask (> 0.5);
- ``map_auc_label``: the same against the label map ``pdm`` > ``label_thr``;
- ``triplet``: fraction of samples with S(gt) > S(syn) > S(sr) (strict: a constant score gets 0);
- ``srcc``: Spearman correlation of the score with the full-reference label -mean|I - GT| over the
  sr, syn and gt images (the gt images' label is 0).

Hacking part (``evaluate_hacking``), on a start generator's and a hacked generator's outputs of
the same held-out images and their GT:

- ``start_above_hacked``: share of images with score(start) > score(hacked);
- ``image_auc``: ROC-AUC of the map's mean, hacked images positive, start images negative;
- ``pixel_auc``: pixel ROC-AUC of the hacked image's map against the pixels where hacking added
  error, mean_c|hacked - GT| - mean_c|start - GT| > ``error_thr`` (default 0.05 of the [0, 1] range,
  about 13 grey levels: an error a viewer sees, well above 8-bit rounding and resampling noise).

"Best trivial" is the best of the three trivial detectors on each metric; the reward model beats it
when its value is strictly higher. With ``lq_floors`` the LQ-aware floors (``metrics.trivial_detectors.LQ_DETECTORS``)
are measured beside them, from each FGR sample's ``lq/`` image and the hacking check's LQ folder; they are not in the
"best trivial" of a reward model that does not see the LQ.
"""
import math
import os
import re

import numpy as np

from finpercep_basicsr.fgr.store import read_meta
from finpercep_basicsr.metrics.finpercep_rm_metric import map_auc, srcc, triplet_accuracy
from finpercep_basicsr.metrics.trivial_detectors import (LQ_DETECTORS, TRIVIAL_DETECTORS, lq_detector, trivial_detector,
                                                         upsample_lq)
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import decode_map, list_images, read_image

FGR_METRICS = ('map_auc', 'map_auc_label', 'triplet', 'srcc')
HACK_METRICS = ('start_above_hacked', 'image_auc', 'pixel_auc')
RM = 'rm'
POOLED = 'pooled'


def reward_detector(net, tile=512, overlap=64, batch_size=4, device='cpu', use_lq=True):
    """The reward network as a detector (tiled, no grad; see ``finpercep_basicsr.evaluation.score.score_images``).
    An LQ-conditioned network is given each image's LQ (``needs_lq``) unless ``use_lq`` is False (its no-reference
    fallback)."""
    from finpercep_basicsr.evaluation.score import score_images

    def detect(images, lqs=None):
        return [(s, m) for s, m, _ in score_images(net, images, tile, overlap, batch_size, device, lqs)]

    detect.needs_lq = bool(use_lq and getattr(net, 'lq_condition', False))
    return detect


def build_detectors(rm_detect, window=7, lq_floors=False):
    """``{'rm': rm_detect, 'constant': ..., 'laplacian': ..., 'blur': ...}`` (insertion order = table order), then
    the LQ-aware floors with ``lq_floors``."""
    detectors = {RM: rm_detect, **{k: trivial_detector(k, window) for k in TRIVIAL_DETECTORS}}
    if lq_floors:
        detectors.update({k: lq_detector(k, window) for k in LQ_DETECTORS})
    return detectors


def needs_lq(detectors):
    """Whether any detector scores with the images' LQ inputs."""
    return any(getattr(detect, 'needs_lq', False) for detect in detectors.values())


def run_detector(detect, images, lqs):
    """``detect(images)``, or ``detect(images, lqs)`` for an LQ-aware detector."""
    return detect(images, lqs) if getattr(detect, 'needs_lq', False) else detect(images)


def upsampled_lq(path, shape):
    """The LQ image at ``path`` upsampled to ``shape`` (H, W) (``upsample_lq``), so that it crops with its HR image."""
    return upsample_lq(read_image(path), shape)


def parse_family_map(items):
    """``['PATTERN=FAMILY', ...]`` -> list of (pattern, compiled regex, family).

    Raises:
        UserInputError: An item without '=' or with an invalid regular expression.
    """
    rules = []
    for item in items or []:
        pattern, sep, family = item.partition('=')
        if not sep or not pattern or not family:
            raise UserInputError(f'--family-map {item!r}: expected NAME=FAMILY or REGEX=FAMILY')
        try:
            rules.append((pattern, re.compile(pattern), family))
        except re.error as err:
            raise UserInputError(f'--family-map {item!r}: invalid regular expression: {err}') from err
    return rules


def family_of(sr_model, rules):
    """The family of an SR model: the first rule naming it exactly or matching it fully, else itself."""
    for pattern, regex, family in rules:
        if sr_model == pattern or regex.fullmatch(sr_model):
            return family
    return sr_model


def center_crop(img, max_size):
    """The central ``max_size`` x ``max_size`` window (or less where the image is smaller); None keeps all."""
    if not max_size:
        return img
    h, w = img.shape[:2]
    top, left = max(0, (h - max_size) // 2), max(0, (w - max_size) // 2)
    return img[top:top + max_size, left:left + max_size]


def _read_map(path):
    try:
        with open(path, 'rb') as f:
            return decode_map(f.read(), path)
    except OSError as err:
        raise UserInputError(f'cannot read map {path}: {err}') from err


def fgr_samples(folders, rules=(), families=None, limit=0):
    """FGR samples of the folders: dicts ``root``, ``name``, ``sr_model``, ``family`` (sorted by family, name).

    Args:
        families (list[str] | None): Keep only these families (after regrouping).
        limit (int): At most this many samples per family (0: all), the first by folder and name.

    Raises:
        UserInputError: A folder without finished samples, or no sample left after filtering.
    """
    samples = []
    for root in folders:
        entries = read_meta(root)
        if not entries:
            raise UserInputError(f'{root}: no samples (missing or empty {os.path.join(root, "meta_info.jsonl")})')
        for entry in sorted(entries, key=lambda e: e['name']):
            sr_model = str(entry.get('sr_model', 'unknown'))
            samples.append(dict(root=root, name=entry['name'], sr_model=sr_model, family=family_of(sr_model, rules)))
    if families:
        samples = [s for s in samples if s['family'] in families]
    counts, kept = {}, []
    for s in samples:
        counts[s['family']] = counts.get(s['family'], 0) + 1
        if not limit or counts[s['family']] <= limit:
            kept.append(s)
    if not kept:
        raise UserInputError(f'no FGR samples of families {families} in {", ".join(folders)}')
    return sorted(kept, key=lambda s: s['family'])


def load_fgr_sample(sample, max_size=None, with_lq=False):
    """Images ``gt``, ``syn``, ``sr`` (H, W, 3) and maps ``mask``, ``pdm`` (H, W) of one sample, cropped alike; with
    ``with_lq`` also ``lq``, its LQ upsampled to (H, W, 3).

    Raises:
        UserInputError: Sizes differ, or ``with_lq`` and the sample has no ``lq/`` image.
    """
    root, name = sample['root'], sample['name']
    out = {k: read_image(os.path.join(root, k, f'{name}.png')) for k in ('gt', 'syn', 'sr')}
    out.update({k: _read_map(os.path.join(root, k, f'{name}.png')) for k in ('mask', 'pdm')})
    shapes = {k: v.shape[:2] for k, v in out.items()}
    if len(set(shapes.values())) != 1:
        raise UserInputError(f'{root} sample {name}: image sizes differ {shapes}')
    if with_lq:
        path = os.path.join(root, 'lq', f'{name}.png')
        if not os.path.isfile(path):
            raise UserInputError(f'{path} missing: the set was built before the LQ was stored; rerun its build '
                                 'command (scripts/build_fgr.py -opt ...) to add it')
        out['lq'] = upsampled_lq(path, shapes['gt'])
    return {k: center_crop(v, max_size) for k, v in out.items()}


def l1_to_gt(img, gt):
    """Mean absolute difference to GT over pixels and channels (the full-reference label is its negation)."""
    return float(np.abs(img - gt).mean())


def evaluate_fgr(samples, detectors, label_thr=0.1, max_size=None, chunk=8):
    """Run every detector on every sample and compute ``FGR_METRICS`` per family and pooled.

    Returns:
        dict: ``{'families': {family: {'samples', 'sr_models', 'metrics': {detector: {metric: v}}}},
        'pooled': {...}}``.
    """
    rec = {k: [] for k in ('mask', 'label', 'l1_syn', 'l1_sr')}
    outs = {d: {'gt': [], 'syn': [], 'sr': [], 'map': []} for d in detectors}
    with_lq = needs_lq(detectors)
    for start in range(0, len(samples), chunk):
        loaded = [load_fgr_sample(s, max_size, with_lq) for s in samples[start:start + chunk]]
        for x in loaded:
            rec['mask'].append(x['mask'] > 0.5)
            rec['label'].append(x['pdm'] > label_thr)
            rec['l1_syn'].append(l1_to_gt(x['syn'], x['gt']))
            rec['l1_sr'].append(l1_to_gt(x['sr'], x['gt']))
        images = [x[k] for x in loaded for k in ('gt', 'syn', 'sr')]
        lqs = [x['lq'] for x in loaded for _ in range(3)] if with_lq else None
        for name, detect in detectors.items():
            results = run_detector(detect, images, lqs)
            for i in range(len(loaded)):
                (s_gt, _), (s_syn, m_syn), (s_sr, _) = results[3 * i:3 * i + 3]
                o = outs[name]
                o['gt'].append(s_gt)
                o['syn'].append(s_syn)
                o['sr'].append(s_sr)
                o['map'].append(np.asarray(m_syn, np.float32))

    def group(idx):
        metrics = {}
        zeros = np.zeros(len(idx))
        labels = np.concatenate([-np.take(rec['l1_sr'], idx), -np.take(rec['l1_syn'], idx), zeros])
        for name, o in outs.items():
            sr, syn, gt = (np.take(o[k], idx) for k in ('sr', 'syn', 'gt'))
            maps = [o['map'][i] for i in idx]
            metrics[name] = {'map_auc': map_auc(maps, [rec['mask'][i] for i in idx]),
                             'map_auc_label': map_auc(maps, [rec['label'][i] for i in idx]),
                             'triplet': triplet_accuracy(sr, syn, gt),
                             'srcc': srcc(np.concatenate([sr, syn, gt]), labels)}
        return {'samples': len(idx), 'sr_models': sorted({samples[i]['sr_model'] for i in idx}),
                'metrics': metrics}

    families = {}
    for i, s in enumerate(samples):
        families.setdefault(s['family'], []).append(i)
    return {'families': {f: group(idx) for f, idx in families.items()}, POOLED: group(list(range(len(samples))))}


def hack_triplets(start_dir, hacked_dir, gt_dir, lq_dir=None):
    """(name, start path, hacked path, GT path, LQ path or None) for every image of ``hacked_dir`` (same file names).

    Raises:
        UserInputError: A folder without images, or an image missing from the start, GT or LQ folder.
    """
    for folder in (start_dir, hacked_dir, gt_dir) + ((lq_dir,) if lq_dir else ()):
        if not os.path.isdir(folder):
            raise UserInputError(f'no such folder: {folder}')
    hacked = list_images(hacked_dir)
    if not hacked:
        raise UserInputError(f'no images in {hacked_dir}')
    triplets = []
    for path in hacked:
        name = os.path.basename(path)
        others = [os.path.join(d, name) for d in (start_dir, gt_dir) + ((lq_dir,) if lq_dir else ())]
        for other in others:
            if not os.path.isfile(other):
                raise UserInputError(f'{other} missing: --hack-start, --hack-out, --hack-gt and --hack-lq need the '
                                     'same file names')
        triplets.append((name, others[0], path, others[1], others[2] if lq_dir else None))
    return triplets


def added_error(start, hacked, gt, error_thr=0.05):
    """Pixels (H, W) where hacking added error: mean_c|hacked - GT| - mean_c|start - GT| > ``error_thr``."""
    return (np.abs(hacked - gt).mean(axis=2) - np.abs(start - gt).mean(axis=2)) > error_thr


def roc_auc(values, positive):
    """ROC-AUC of 1-D ``values`` for the boolean ``positive`` labels (ties count one half)."""
    return map_auc([np.asarray(values, np.float64)], [np.asarray(positive, np.float64)])


def evaluate_hacking(triplets, detectors, error_thr=0.05, max_size=None):
    """Run every detector on the start and hacked images; ``HACK_METRICS`` per detector.

    Returns:
        dict: ``{'images', 'added_error_fraction', 'metrics': {detector: {metric: value}}}``.
    """
    added, per = [], {d: {'s_start': [], 's_hacked': [], 'mean_start': [], 'mean_hacked': [], 'maps': []}
                      for d in detectors}
    with_lq = needs_lq(detectors)
    if with_lq and any(t[4] is None for t in triplets):
        raise UserInputError('the LQ-aware floors need the hacked images\' LQ inputs (--hack-lq DIR)')
    for name, start_path, hacked_path, gt_path, lq_path in triplets:
        imgs = [read_image(p) for p in (start_path, hacked_path, gt_path)]
        if len({i.shape for i in imgs}) != 1:
            raise UserInputError(f'{name}: start, hacked and GT sizes differ {[i.shape[:2] for i in imgs]}')
        lq = center_crop(upsampled_lq(lq_path, imgs[0].shape[:2]), max_size) if with_lq else None
        start, hacked, gt = (center_crop(i, max_size) for i in imgs)
        added.append(added_error(start, hacked, gt, error_thr))
        for d, detect in detectors.items():
            (s_start, m_start), (s_hacked, m_hacked) = run_detector(detect, [start, hacked], [lq, lq])
            p = per[d]
            p['s_start'].append(s_start)
            p['s_hacked'].append(s_hacked)
            p['mean_start'].append(float(np.mean(m_start)))
            p['mean_hacked'].append(float(np.mean(m_hacked)))
            p['maps'].append(np.asarray(m_hacked, np.float32))
    n = len(triplets)
    is_hacked = np.r_[np.zeros(n), np.ones(n)]
    metrics = {d: {'start_above_hacked': float(np.mean(np.array(p['s_start']) > np.array(p['s_hacked']))),
                   'image_auc': roc_auc(p['mean_start'] + p['mean_hacked'], is_hacked),
                   'pixel_auc': map_auc(p['maps'], added)}
               for d, p in per.items()}
    return {'images': n, 'added_error_fraction': float(np.mean(np.concatenate([a.ravel() for a in added]))),
            'metrics': metrics}


def _finite(v):
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def compare(metrics, names):
    """Best trivial detector per metric and whether the reward model strictly beats it (None: undefined)."""
    best, beats = {}, {}
    for m in names:
        values = {d: metrics[d][m] for d in TRIVIAL_DETECTORS if _finite(metrics[d][m])}
        if not values or not _finite(metrics[RM][m]):
            best[m], beats[m] = None, None
            continue
        d = max(values, key=values.get)  # ties: the first of TRIVIAL_DETECTORS
        best[m] = {'detector': d, 'value': values[d]}
        beats[m] = bool(metrics[RM][m] > values[d])
    return best, beats
