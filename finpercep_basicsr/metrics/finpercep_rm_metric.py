"""Reward-model metrics: score correlation and ranking, and PDM quality against the swap mask / label map.

Every function accepts NumPy arrays, torch tensors or (for maps) a list of per-image arrays of any
sizes, ignores unrelated keyword arguments (BasicSR's ``calculate_metric`` passes the whole data
dict) and returns a float. Map inputs are (N, 1, H, W), (N, H, W) or lists of (H, W)/(1, H, W).
"""
import functools

import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY
from scipy.stats import rankdata

# the MIT saliency benchmark's epsilon for KLD (keeps log finite where the prediction is 0)
_KLD_EPS = 2.2204e-16


def _vector(x):
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _maps(x):
    """A list of flattened float64 per-image maps."""
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        x = x.reshape(x.shape[0], -1) if x.ndim >= 3 else x.reshape(1, -1)
    return [_vector(m) for m in x]


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0  # a constant has no correlation


def srcc(score, label, **_):
    """Spearman rank correlation (average ranks for ties) of predicted scores (N,) and labels (N,)."""
    return _pearson(rankdata(_vector(score)), rankdata(_vector(label)))


def plcc(score, label, **_):
    """Pearson linear correlation of predicted scores (N,) and labels (N,)."""
    return _pearson(_vector(score), _vector(label))


def triplet_accuracy(score_sr, score_syn, score_gt, **_):
    """Fraction of triplets ordered S_SR < S_syn < S_GT (strictly)."""
    sr, syn, gt = _vector(score_sr), _vector(score_syn), _vector(score_gt)
    return float(np.mean((sr < syn) & (syn < gt)))


def map_mae(pdm, pdm_gt, **_):
    """Mean absolute error of predicted and label maps over all pixels of all images."""
    pred, gt = np.concatenate(_maps(pdm)), np.concatenate(_maps(pdm_gt))
    return float(np.abs(pred - gt).mean())


def map_auc(pdm, mask, **_):
    """Pixel-level ROC-AUC of the map against the binary mask (> 0.5), pooled over all images.

    Mann-Whitney form with average ranks, so tied predictions count one half (a constant map
    scores exactly 0.5). NaN when the mask has only one class.
    """
    pred, pos = np.concatenate(_maps(pdm)), np.concatenate(_maps(mask)) > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    ranks = rankdata(pred)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def nss(pdm, mask, **_):
    """Normalized Scanpath Saliency: mean of the standardised map on mask pixels, averaged over images.

    Images without mask pixels are skipped; a constant map scores 0.
    """
    values = []
    for pred, m in zip(_maps(pdm), _maps(mask)):
        on = m > 0.5
        if not on.any():
            continue
        std = pred.std()
        values.append(float(((pred - pred.mean()) / std)[on].mean()) if std > 0 else 0.0)
    return float(np.mean(values)) if values else float('nan')


def cc(pdm, pdm_gt, **_):
    """Pearson correlation of predicted and label maps per image, averaged (labels that are constant skipped)."""
    values = [_pearson(p, g) for p, g in zip(_maps(pdm), _maps(pdm_gt)) if g.std() > 0]
    return float(np.mean(values)) if values else float('nan')


def kld(pdm, pdm_gt, **_):
    """KL divergence KL(label || prediction) of the maps normalised to sum 1, averaged; lower is better.

    Images whose label map is all zero (nothing degraded) are skipped.
    """
    values = []
    for p, g in zip(_maps(pdm), _maps(pdm_gt)):
        if g.sum() <= 0:
            continue
        q, g = p / (p.sum() + _KLD_EPS), g / g.sum()
        values.append(float((g * np.log(_KLD_EPS + g / (q + _KLD_EPS))).sum()))
    return float(np.mean(values)) if values else float('nan')


# registered name -> (function, better); BasicSR registers by ``__name__``, so each gets a named alias
METRICS = {
    'FinPercepSRCC': (srcc, 'higher'),
    'FinPercepPLCC': (plcc, 'higher'),
    'FinPercepTripletAcc': (triplet_accuracy, 'higher'),
    'FinPercepMapMAE': (map_mae, 'lower'),
    'FinPercepMapAUC': (map_auc, 'higher'),
    'FinPercepNSS': (nss, 'higher'),
    'FinPercepCC': (cc, 'higher'),
    'FinPercepKLD': (kld, 'lower'),
}


def _register(name, fn):
    @functools.wraps(fn)
    def metric(**kwargs):
        return fn(**kwargs)

    metric.__name__ = metric.__qualname__ = name
    METRIC_REGISTRY.register(metric)


for _name, (_fn, _) in METRICS.items():
    _register(_name, _fn)
