"""L1 fidelity with the band an LQ input fixes weighted up (tone and shading), for RLHF of SR generators."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from finpercep_basicsr.losses.loss_utils import check_reduction
from finpercep_basicsr.utils.errors import UserInputError


@LOSS_REGISTRY.register()
class FinPercepLQBandL1Loss(nn.Module):
    """``loss_weight * (L1(x, y) + lq_band_weight * L1(down(x), down(y)))``, down = ``scale`` x area pooling.

    An x``scale`` LQ input holds the frequencies up to about 1 / (2 * scale) cycles per pixel; its SR output
    should keep them and invent only finer detail. Area pooling by ``scale`` keeps that band (it is the
    HR image seen at the LQ's resolution), so its L1 holds colour and tone while a reward moves detail. In
    ``pixel_opt`` it compares with GT, in ``ref_opt`` with the generator before RLHF. ``lq_band_weight: 0``
    is BasicSR's L1Loss.

    Why: on the hacking benchmark, with the colour gradient of the reward detached, most of the PSNR that
    RLHF still lost was error in this band (scripts/error_bands.py), under a plain L1 of weight 1.
    """

    def __init__(self, loss_weight=1.0, lq_band_weight=1.0, scale=4, reduction='mean'):
        super().__init__()
        check_reduction('FinPercepLQBandL1Loss', reduction)
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise UserInputError(f'FinPercepLQBandL1Loss: scale must be an integer >= 1, got {scale!r}')
        if lq_band_weight < 0:
            raise UserInputError(f'FinPercepLQBandL1Loss: lq_band_weight must be >= 0, got {lq_band_weight!r}')
        self.loss_weight, self.lq_band_weight, self.scale, self.reduction = (
            loss_weight, lq_band_weight, scale, reduction)

    def forward(self, pred, target, weight=None, **kwargs):
        if weight is not None:
            raise ValueError('FinPercepLQBandL1Loss: a per-pixel weight is not supported')
        if pred.shape != target.shape:
            raise ValueError(f'FinPercepLQBandL1Loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ')
        if pred.shape[-1] % self.scale or pred.shape[-2] % self.scale:
            raise ValueError(f'FinPercepLQBandL1Loss: image size {tuple(pred.shape[-2:])} is not divisible by '
                             f'scale={self.scale}')
        full = F.l1_loss(pred, target, reduction='none')
        band = F.l1_loss(F.avg_pool2d(pred, self.scale), F.avg_pool2d(target, self.scale), reduction='none')
        # 'none' is per HR pixel (each band cell spread over its scale x scale pixels); 'sum' is its sum
        if self.reduction == 'none':
            return self.loss_weight * (full + self.lq_band_weight * F.interpolate(band, scale_factor=self.scale))
        if self.reduction == 'sum':
            return self.loss_weight * (full.sum() + self.lq_band_weight * self.scale ** 2 * band.sum())
        return self.loss_weight * (full.mean() + self.lq_band_weight * band.mean())
