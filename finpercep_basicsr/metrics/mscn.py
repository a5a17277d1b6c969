"""Shared pieces of the classical no-reference metrics in torch (NIQE, PIQE): MSCN coefficients and 8-bit rounding.

MSCN (mean-subtracted, contrast-normalised) coefficients are what both metrics compute their statistics on: the image
minus its local Gaussian mean, over its local standard deviation plus 1 (in 8-bit levels), with MATLAB's 7 x 7 window
of sigma 7/6 and replicated borders.
"""
import torch
import torch.nn.functional as F


def gaussian_window(size=7, sigma=7.0 / 6.0, dtype=torch.float64):
    """MATLAB's ``fspecial('gaussian', size, sigma)`` as a (1, 1, size, size) kernel."""
    ax = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax[:, None].square() + ax[None, :].square()) / (2 * sigma ** 2))
    return (g / g.sum())[None, None]


def mscn(img, window):
    """img (B, 1, H, W) in 8-bit levels -> MSCN coefficients (B, 1, H, W)."""
    r = window.size(-1) // 2
    mu = F.conv2d(F.pad(img, (r, r, r, r), mode='replicate'), window)
    second = F.conv2d(F.pad(img.square(), (r, r, r, r), mode='replicate'), window)
    # the small constant keeps the square root's gradient finite in flat regions (value change < 1e-6 levels)
    sigma = ((second - mu.square()).abs() + 1e-12).sqrt()
    return (img - mu) / (sigma + 1)


def round_straight_through(x):
    """Round to integers (8-bit levels, as the MATLAB metrics do) and pass the gradient through unchanged."""
    return x + (x.round() - x).detach()
