"""Trivial artifact detectors: the floor a reward model's map and score must clear.

Each detector maps RGB float images (H, W, 3) in [0, 1] to ``(score, map)`` pairs, the same shape
of answer ``finpercep_basicsr.evaluation.score.score_images`` gives for a reward network (higher score = better
quality, higher map value = more degraded), so one evaluation loop runs all of them.

- ``constant``: map 0 and score 0 everywhere (pixel AUC 0.5, no ordering at all);
- ``laplacian``: map = local energy of the Laplacian (catches over-sharpening, noise, hacked
  texture), score = -mean(map);
- ``blur``: its negation, map = -energy, score = +mean(energy) (catches blur).

LQ-aware floors (``LQ_DETECTORS``), for a reward that sees the LQ input as well (``lq_detector``):

- ``lq_residual``: map = local mean of |image - bicubic-upsampled LQ| (detail the LQ does not support, and colour
  or tone moved away from it), score = -mean(map);
- ``lq_agreement``: its negation. On FGR data it is the strong one: an SR model's output agrees with its LQ more
  closely than the GT does (the degradation's noise, blur and JPEG are in the LQ, not in the GT), so a map that
  learns "agrees with the LQ = SR region" finds swaps without seeing any artifact, and would reward a generator for
  moving away from its input.
"""
import cv2
import numpy as np

TRIVIAL_DETECTORS = ('constant', 'laplacian', 'blur')
LQ_DETECTORS = ('lq_residual', 'lq_agreement')


def laplacian_energy(img, window=7):
    """Local energy of the Laplacian of the grayscale image.

    ``gray`` is the BT.601 luma; the Laplacian is the 4-neighbour kernel (``cv2.Laplacian`` with
    ``ksize=1``); the energy is the mean of its square over a ``window`` x ``window`` box (borders
    reflected), so a flat patch has energy 0 and fine texture or ringing has a high one.

    Args:
        img (np.ndarray): RGB float (H, W, 3) in [0, 1] (or grayscale (H, W)).
        window (int): Side of the averaging box in pixels (>= 1).

    Returns:
        np.ndarray: float32 (H, W), >= 0.
    """
    img = np.asarray(img, np.float32)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    return cv2.blur(lap * lap, (window, window), borderType=cv2.BORDER_REFLECT)


def _check_detector(kind, kinds, what, window):
    if kind not in kinds:
        raise ValueError(f'unknown {what} {kind!r}: choose {", ".join(kinds)}')
    if window < 1:
        raise ValueError(f'window must be >= 1, got {window}')


def _signed(evidence, sign):
    """(score, map) of a detector whose map is ``sign * evidence`` and whose score is minus the map's mean."""
    return -sign * float(evidence.mean()), sign * evidence


def trivial_detector(kind, window=7):
    """A detector ``images -> [(score, map (H, W)), ...]`` of the given kind (see the module docstring).

    Raises:
        ValueError: Unknown ``kind`` or ``window`` < 1.
    """
    _check_detector(kind, TRIVIAL_DETECTORS, 'trivial detector', window)
    sign = 1.0 if kind == 'laplacian' else -1.0

    def detect(images):
        if kind == 'constant':
            return [(0.0, np.zeros(img.shape[:2], np.float32)) for img in images]
        return [_signed(laplacian_energy(img, window), sign) for img in images]

    return detect


def upsample_lq(lq, shape):
    """An RGB LQ image (h, w, 3) upsampled to ``shape`` (H, W) as an LQ-conditioned reward network does it (torch
    bicubic, half-pixel centres, clipped to [0, 1]; ``FinPercepRewardNet.upsampled_lq``); a no-op at that size."""
    import torch
    import torch.nn.functional as F
    lq = np.asarray(lq, np.float32)
    if lq.shape[:2] == tuple(shape[:2]):
        return lq
    t = torch.from_numpy(np.ascontiguousarray(lq.transpose(2, 0, 1)))[None]
    up = F.interpolate(t, size=tuple(shape[:2]), mode='bicubic', align_corners=False).clamp(0, 1)
    return up[0].permute(1, 2, 0).numpy()


def lq_residual(img, lq, window=7):
    """Local mean (``window`` box, borders reflected) of mean_c|img - ``upsample_lq(lq)``|: float32 (H, W)."""
    img = np.asarray(img, np.float32)
    return cv2.blur(np.abs(img - upsample_lq(lq, img.shape)).mean(axis=2), (window, window),
                    borderType=cv2.BORDER_REFLECT)


def lq_detector(kind, window=7):
    """An LQ-aware detector ``(images, lqs) -> [(score, map (H, W)), ...]`` (``LQ_DETECTORS``); its ``needs_lq``
    attribute is True.

    Raises:
        ValueError: Unknown ``kind`` or ``window`` < 1.
    """
    _check_detector(kind, LQ_DETECTORS, 'LQ detector', window)
    sign = 1.0 if kind == 'lq_residual' else -1.0

    def detect(images, lqs):
        return [_signed(lq_residual(img, lq, window), sign) for img, lq in zip(images, lqs, strict=True)]

    detect.needs_lq = True
    return detect
