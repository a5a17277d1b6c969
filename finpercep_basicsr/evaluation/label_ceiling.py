"""The hacking check's ceiling for a label formula: how well the FGR label itself, computed against the GT, marks the
pixels a hack added error to.

A reward model's map is trained to predict its label (``fgr.labels``). If the label of a hacked image, made with the
GT in hand, ranks the check's positive pixels (``rm_generalization.added_error``) no better than a trivial detector,
then no map that fits that label can beat the detector there, whatever it is trained on. This measures that, for the
label options given and for their two terms alone (alpha 1: the pixel L1; alpha 0: the feature distance).

Each hacked image is labelled as a whole-image swap (mask = 1), with the label options' normalisation.
"""
import numpy as np

from finpercep_basicsr.evaluation.rm_generalization import added_error, center_crop
from finpercep_basicsr.fgr.labels import LabelMaker
from finpercep_basicsr.metrics.finpercep_rm_metric import map_auc
from finpercep_basicsr.utils.image_io import read_image


def label_variants(labels_opt):
    """``{'label': options}``, plus ``'pixel term'`` (alpha 1) and ``'feature term'`` (alpha 0) when it mixes both."""
    variants = {'label': dict(labels_opt)}
    if 0 < float(labels_opt.get('alpha', 0.5)) < 1:
        variants.update({'pixel term': dict(labels_opt, alpha=1.0), 'feature term': dict(labels_opt, alpha=0.0)})
    return variants


def label_ceiling(triplets, labels_opt, error_thr=0.05, max_size=None, progress=False):
    """Pixel AUC of each label variant of the hacked images against the pixels where hacking added error.

    Args:
        triplets (list): ``rm_generalization.hack_triplets`` entries (name, start, hacked, GT, LQ paths).
        labels_opt (dict): ``fgr.labels`` options.

    Returns:
        dict: ``{'images', 'added_error_fraction', 'pixel_auc': {variant: value}, 'floors': {detector: value}}``, the
        floors being the trivial detectors' pixel AUC on the same images (``rm_generalization.evaluate_hacking``).
    """
    from finpercep_basicsr.evaluation.rm_generalization import evaluate_hacking
    from finpercep_basicsr.metrics.trivial_detectors import TRIVIAL_DETECTORS, trivial_detector
    from tqdm import tqdm
    makers = {k: LabelMaker(v) for k, v in label_variants(labels_opt).items()}
    added, maps = [], {k: [] for k in makers}
    for _, start_path, hacked_path, gt_path, _ in tqdm(triplets, desc='label ceiling', disable=not progress):
        start, hacked, gt = (center_crop(read_image(p), max_size) for p in (start_path, hacked_path, gt_path))
        added.append(added_error(start, hacked, gt, error_thr))
        whole = np.ones(gt.shape[:2], np.float32)
        for key, maker in makers.items():
            maps[key].append(maker.label(hacked, hacked, gt, whole)[0])
    floors = evaluate_hacking(triplets, {k: trivial_detector(k) for k in TRIVIAL_DETECTORS}, error_thr, max_size)
    return {'images': len(triplets), 'added_error_fraction': floors['added_error_fraction'],
            'pixel_auc': {k: map_auc(v, added) for k, v in maps.items()},
            'floors': {k: v['pixel_auc'] for k, v in floors['metrics'].items()}}
