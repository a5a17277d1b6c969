"""Pixel-domain visual information fidelity (VIFp, Sheikh & Bovik 2006), one score per image.

pyiqa's ``vif`` (the wavelet-domain VIF) takes the logarithm of terms built from a pseudo-inverse of
near-singular covariances; in float32 that gives NaN on flat crops (a stormy sky of the hacking benchmark's test
split). The pixel-domain form has no such step; ``piq.vif_p`` computes it, here in float64.
"""
import torch

MIN_SIZE = 41  # its coarsest of four scales filters a 1/8-size image with a 5x5 window


class PixelVIF(torch.nn.Module):
    """``metric(sr, gt)`` -> (B,) VIFp of each image against its reference (higher is better, 1 = identical)."""

    lower_better = False

    def forward(self, sr, gt):
        import piq
        if min(sr.shape[-2:]) < MIN_SIZE:
            raise ValueError(f'vif_p needs images of at least {MIN_SIZE}x{MIN_SIZE} px, got '
                                 f'{tuple(sr.shape[-2:])}; leave it out of the metrics for smaller crops')
        return piq.vif_p(sr.double().clamp(0, 1), gt.double().clamp(0, 1), data_range=1.0,
                         reduction='none').to(sr.dtype)
