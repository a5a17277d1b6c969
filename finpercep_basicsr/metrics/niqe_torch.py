"""BasicSR's NIQE (``basicsr.metrics.niqe.calculate_niqe``, convert_to='y') in torch, with a gradient: a reward to hack.

NIQE is one of the classical no-reference metrics an RLHF generator can be trained against, and so a source of
hacked images for the reward model's data. BasicSR computes it in NumPy (no gradient); pyiqa's torch NIQE needs a
download for its parameters and has no gradient through the AGGD shape, which a table look-up estimates: with only the
scale terms' gradient, descending it lowers NIQE for a few steps and then raises it.

Here the value is BasicSR's algorithm run in double precision, with the pristine model that ships in the BasicSR wheel
(``niqe_pris_params.npz``): ``basicsr.metrics.niqe.niqe`` on a float64 luma gives the same number to 1e-4. (BasicSR's
``calculate_niqe`` filters a float32 luma, which moves its result by up to 0.5 %.) The gradient is complete:
- the AGGD shape keeps BasicSR's table value, and takes its gradient from the linear interpolation of the same
  (monotone) table;
- the rounding to 8-bit levels passes the gradient straight through;
- MATLAB's antialiased bicubic halving is a fixed linear map (two matrices built from BasicSR's own weights).
"""
import math
import os

import numpy as np
import torch
from torch import nn

from finpercep_basicsr.metrics.mscn import gaussian_window, mscn, round_straight_through

BLOCK = 96  # NIQE's patch size at full scale (BasicSR's and the MATLAB release's default)
_Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 luma of RGB in [0, 1], in 8-bit levels (plus 16)
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def pristine_params():
    """The pristine multivariate Gaussian (mean (36,), covariance (36, 36)) that ships in the BasicSR wheel."""
    import basicsr.metrics

    path = os.path.join(os.path.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz')
    params = np.load(path)
    return params['mu_pris_param'].reshape(-1), params['cov_pris_param']


def _matlab_halving_matrix(length):
    """(ceil(length / 2), length): MATLAB ``imresize(x, 0.5)`` (bicubic, antialiased) along one axis, as BasicSR
    computes it (symmetric padding, then its weights), written as one matrix."""
    from basicsr.utils.matlab_functions import calculate_weights_indices

    out_length = math.ceil(length * 0.5)
    weights, indices, sym_start, sym_end = calculate_weights_indices(length, out_length, 0.5, 'cubic', 4, True)
    padded = torch.cat([torch.arange(sym_start - 1, -1, -1), torch.arange(length),
                        torch.arange(length - 1, length - 1 - sym_end, -1)])  # padded row -> source row
    matrix = torch.zeros(out_length, length, dtype=torch.float64)
    for i in range(out_length):
        start = int(indices[i][0])
        sources = padded[start:start + weights.size(1)]
        matrix[i].index_add_(0, sources, weights[i].double())
    return matrix


def _table_with_gradient(value, table_x, table_y):
    """``table_y`` at the ``table_x`` entry nearest ``value`` (as BasicSR's argmin), with the gradient of the linear
    interpolation of the table (``table_x`` increasing)."""
    nearest = table_y[torch.argmin((table_x - value.unsqueeze(-1)).square(), dim=-1)]
    hi = torch.searchsorted(table_x, value.detach().contiguous()).clamp(1, table_x.numel() - 1)
    x0, x1, y0, y1 = table_x[hi - 1], table_x[hi], table_y[hi - 1], table_y[hi]
    interpolated = y0 + (value - x0) * (y1 - y0) / (x1 - x0)
    return nearest + interpolated - interpolated.detach()


class NIQE(nn.Module):
    """NIQE of RGB images in [0, 1]; lower is better. ``forward`` (B, 3, H, W) -> (B,), differentiable.

    Each image needs at least two 96 x 96 blocks (the distorted model is a covariance over blocks), i.e. H, W >= 96 and
    H * W >= 2 * 96^2 after cropping to whole blocks.
    """

    def __init__(self):
        super().__init__()
        mu, cov = pristine_params()
        self.register_buffer('mu_pristine', torch.from_numpy(mu).double(), persistent=False)
        self.register_buffer('cov_pristine', torch.from_numpy(cov).double(), persistent=False)
        # the wheel's window is this one (to 1e-17)
        self.register_buffer('window', gaussian_window(), persistent=False)
        alpha = torch.arange(0.2, 10.001, 0.001, dtype=torch.float64)  # BasicSR's table of AGGD shapes
        ratio = torch.exp(2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))
        self.register_buffer('alpha_table', alpha, persistent=False)
        self.register_buffer('ratio_table', ratio, persistent=False)  # increasing in alpha
        self._halving = {}

    def _halve(self, img):
        h, w = img.shape[-2:]
        for n in (h, w):
            if n not in self._halving:
                self._halving[n] = _matlab_halving_matrix(n)
        rows, cols = self._halving[h].to(img.device), self._halving[w].to(img.device)
        return rows @ img @ cols.t()

    def _aggd(self, blocks):
        """blocks (N, n) -> shape alpha, left and right scales (N,), as BasicSR's ``estimate_aggd_param``."""
        neg, pos = (blocks < 0).double(), (blocks > 0).double()
        left = ((blocks.square() * neg).sum(-1) / neg.sum(-1)).sqrt()
        right = ((blocks.square() * pos).sum(-1) / pos.sum(-1)).sqrt()
        gammahat = left / right
        rhat = blocks.abs().mean(-1).square() / blocks.square().mean(-1)
        rhatnorm = rhat * (gammahat ** 3 + 1) * (gammahat + 1) / (gammahat.square() + 1).square()
        alpha = _table_with_gradient(rhatnorm, self.ratio_table, self.alpha_table)
        scale = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
        return alpha, left * scale, right * scale

    def _features(self, mscn, size):
        """mscn (1, 1, H, W) -> (blocks, 18): BasicSR's ``compute_feature`` per size x size block."""
        blocks = mscn.unfold(2, size, size).unfold(3, size, size).reshape(-1, size, size)
        alpha, left, right = self._aggd(blocks.flatten(1))
        feats = [alpha, (left + right) / 2]
        for shift in _SHIFTS:
            alpha, left, right = self._aggd((blocks * torch.roll(blocks, shift, dims=(1, 2))).flatten(1))
            mean = (right - left) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
            feats += [alpha, mean, left, right]
        return torch.stack(feats, dim=1)

    def score(self, y):
        """y (H, W): luma in 8-bit levels, cropped to whole blocks -> NIQE (scalar)."""
        img = y[None, None]
        feats = []
        for scale in (1, 2):
            feats.append(self._features(mscn(img, self.window), BLOCK // scale))
            if scale == 1:
                img = self._halve(img / 255.0) * 255.0
        feats = torch.cat(feats, dim=1)
        mean = feats.nanmean(dim=0)
        feats = feats[~feats.isnan().any(dim=1)]
        cov = torch.cov(feats.t())
        diff = (self.mu_pristine - mean).unsqueeze(0)
        quality = diff @ torch.linalg.pinv((self.cov_pristine + cov) / 2) @ diff.t()
        return quality.reshape(()).sqrt()

    def forward(self, x):
        if x.ndim != 4 or x.size(1) != 3:
            raise ValueError(f'NIQE: expected RGB images (B, 3, H, W), got shape {tuple(x.shape)}')
        h, w = (x.size(2) // BLOCK) * BLOCK, (x.size(3) // BLOCK) * BLOCK
        if h * w < 2 * BLOCK * BLOCK:
            raise ValueError(f'NIQE needs at least two {BLOCK}x{BLOCK} blocks per image, got '
                                 f'{x.size(2)}x{x.size(3)}')
        luma = 16.0 + torch.einsum('bchw,c->bhw', x[:, :, :h, :w].double(), x.new_tensor(_Y_WEIGHTS).double())
        luma = round_straight_through(luma)  # BasicSR rounds to 8-bit levels (as MATLAB does)
        return torch.stack([self.score(y) for y in luma]).to(x.dtype)
