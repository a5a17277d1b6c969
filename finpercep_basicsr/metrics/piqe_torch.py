"""PIQE (MATLAB's ``piqe``, as pyiqa computes it) in torch, with a gradient: a reward to hack.

pyiqa's PIQE rounds the normalised luminance with ``torch.round``, so its pixel gradient is exactly zero and a
generator cannot be trained against it. Here the rounding passes the gradient through (the value is unchanged), and
the rest is PIQE: MSCN coefficients, 16 x 16 blocks, active blocks (variance > 0.1), and in each active block a
noticeable-distortion test (a 6-pixel run of an edge with a standard deviation < 0.1) and a noise test (centre vs
surround deviation). The score pools the block variances of the blocks those tests flag; the tests themselves are
decisions and carry no gradient, so a generator hacks PIQE by moving the variance of the blocks it flags.
"""
import torch
from torch import nn

from finpercep_basicsr.metrics.mscn import gaussian_window, mscn, round_straight_through

BLOCK = 16
_ACTIVITY = 0.1  # a block is active (spatially prominent) above this MSCN variance
_IMPAIRED = 0.1  # an edge segment this flat marks a noticeable distortion (blocking, blur)
_SEGMENT = 6
_LUMA = (0.299, 0.587, 0.114)  # YIQ's Y, as pyiqa


def _mirror_pad_end(x, pad, dim):
    """Append the last ``pad`` rows or columns, mirrored (MATLAB's 'symmetric' padding, 'post')."""
    return torch.cat([x, x.narrow(dim, x.size(dim) - pad, pad).flip(dim)], dim=dim) if pad else x


def _noise_blocks(blocks, sigma):
    """MATLAB's noise criterion: the block's deviation exceeds twice its relative centre-surround difference."""
    c = BLOCK // 2 - 1  # MATLAB's centre columns of a 16-wide block: 7 and 8 (0-based)
    centre = blocks[..., c:c + 2]
    # MATLAB deletes column 7, then column 8 of what is left: the surround lacks columns 7 and 9, not 7 and 8
    surround = torch.cat([blocks[..., :c], blocks[..., c + 1:c + 2], blocks[..., c + 3:]], dim=-1)
    ratio = torch.nan_to_num(centre.flatten(-2).std(dim=-1) / surround.flatten(-2).std(dim=-1))
    beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio)
    return sigma > 2 * beta


def _impaired_blocks(blocks):
    """Noticeable distortion: some 6-pixel run of one of the block's four edges is (almost) flat."""
    edges = [blocks[..., 0, :], blocks[..., :, BLOCK - 1], blocks[..., BLOCK - 1, :], blocks[..., :, 0]]
    return torch.stack([(e.unfold(-1, _SEGMENT, 1).std(dim=-1) < _IMPAIRED).any(dim=-1) for e in edges]).any(dim=0)


class PIQE(nn.Module):
    """PIQE of RGB images in [0, 1]; lower is better (0-100). ``forward`` (B, 3, H, W) -> (B,), differentiable.

    Sizes that are not multiples of 16 are padded at the bottom and right by ``size % 16``, mirrored (as pyiqa; the
    last partial block is then dropped).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer('window', gaussian_window(), persistent=False)

    def forward(self, x):
        if x.ndim != 4 or x.size(1) != 3:
            raise ValueError(f'PIQE: expected RGB images (B, 3, H, W), got shape {tuple(x.shape)}')
        if min(x.shape[-2:]) < BLOCK:
            raise ValueError(f'PIQE needs images of at least {BLOCK}x{BLOCK}, got {x.size(2)}x{x.size(3)}')
        y = torch.einsum('bchw,c->bhw', x.double(), x.new_tensor(_LUMA).double()).unsqueeze(1)
        y = round_straight_through(255 * y / y.flatten(1).max(dim=1)[0].view(-1, 1, 1, 1))
        y = _mirror_pad_end(_mirror_pad_end(y, y.size(2) % BLOCK, dim=2), y.size(3) % BLOCK, dim=3)
        blocks = mscn(y, self.window).unfold(2, BLOCK, BLOCK).unfold(3, BLOCK, BLOCK).flatten(1, 3)
        variance = blocks.flatten(-2).var(dim=-1)
        active = (variance > _ACTIVITY).double()
        impaired = _impaired_blocks(blocks).double()
        noisy = _noise_blocks(blocks, variance.sqrt()).double()
        distortion = (active * (impaired * (1 - variance) + noisy * variance)).sum(dim=1)
        return ((distortion + 1) / (active.sum(dim=1) + 1) * 100).to(x.dtype)
