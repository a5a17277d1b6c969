"""Helpers shared by the FinPercep losses."""
import math

import torch
import torch.nn.functional as F

from finpercep_basicsr.utils.errors import UserInputError

REDUCTIONS = ('mean', 'sum', 'none')


def check_reduction(name, reduction):
    """Raise ``UserInputError`` naming the loss when ``reduction`` is not one BasicSR losses use."""
    if reduction not in REDUCTIONS:
        raise UserInputError(f'{name}: unsupported reduction {reduction!r}; use one of {", ".join(REDUCTIONS)}')


def reduce_batch(loss, reduction):
    """Reduce per-sample values (B,) by a BasicSR ``reduction``: 'mean' | 'sum' | 'none' (checked by
    ``check_reduction`` when the loss is built)."""
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    return loss


def gaussian_lowpass(x, sigma):
    """Separable Gaussian blur of (B, C, H, W) with reflected borders (radius 3 sigma, at most the image)."""
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).repeat(x.size(1), 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode='reflect'), kernel.view(x.size(1), 1, 1, -1), groups=x.size(1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode='reflect'), kernel.view(x.size(1), 1, -1, 1),
                    groups=x.size(1))


def check_detach_lowpass(name, value):
    """Validate a reward's ``detach_lowpass`` option: None, ``'mean'`` or a Gaussian sigma > 0."""
    if value is None or value == 'mean' or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                             and value > 0):
        return
    raise UserInputError(f'{name}: detach_lowpass must be null, "mean" or a Gaussian sigma > 0 (pixels), '
                         f'got {value!r}')


def scored_image(sr, clamp_input=True, detach_lowpass=None):
    """The image a reward network scores: clamped to [0, 1], its low frequencies optionally detached.

    Detaching a low-pass of the image (``'mean'``: each channel's mean; a number: a Gaussian blur of that
    sigma) leaves the reward's value unchanged but removes the part of its gradient that changes the
    image's colour and tone, so the reward can only move detail. Measured on the hacking benchmark: most
    of the PSNR a reward-hacked RRDBNet loses is a colour cast the reward model barely values (the cast
    alone moves its score by 0.003). Our reading: Adam, which steps by a gradient's sign more than by its
    size, turns the small mean of the reward's pixel gradient into a cast of several percent. In SR the
    LQ input fixes the low frequencies; the fidelity terms then keep them.
    """
    x = sr.clamp(0, 1) if clamp_input else sr
    if detach_lowpass is None:
        return x
    low = x.mean(dim=(2, 3), keepdim=True) if detach_lowpass == 'mean' else gaussian_lowpass(x, float(detach_lowpass))
    return x - low + low.detach()
