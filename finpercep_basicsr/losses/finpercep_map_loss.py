"""L1 between the predicted Perceptual Degradation Map and its label, over the image or the swap region."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from finpercep_basicsr.losses.loss_utils import check_reduction, reduce_batch

MODES = ('full', 'masked', 'balanced')


@LOSS_REGISTRY.register()
class FinPercepMapLoss(nn.Module):
    """Per-image L1 of the PDM, lower is better.

    Modes:
        full: mean |M - M_gt| over every pixel.
        masked: mean over the swap region (``mask`` > 0.5) only, where the label carries signal.
        balanced: mean inside the region + mean outside it, so a small swapped region is not
            outweighed by the clean background (and a clean image, with no region, still counts).

    Args:
        mode (str): 'full' | 'masked' | 'balanced'.
        bce_weight (float): Adds ``bce_weight * BCE(M, M_gt)`` (soft labels) per pixel. The paper's
            loss is the L1 alone (0, the default); but the L1's gradient through the sigmoid,
            ``p (1 - p)``, vanishes once a pixel saturates, and with Adam the clean pixels can then
            drive every logit to -inf (an all-zero map, seen on real FGR data). BCE's gradient at
            the logit is ``p - M_gt``: it never vanishes on a wrong pixel, so the map cannot collapse.
        loss_weight (float): Multiplier of the loss.
        reduction (str): 'mean' | 'sum' | 'none' over the batch.
    """

    def __init__(self, mode='full', bce_weight=0.0, loss_weight=1.0, reduction='mean'):
        super().__init__()
        check_reduction('FinPercepMapLoss', reduction)
        if mode not in MODES:
            raise ValueError(f'FinPercepMapLoss: unknown mode {mode!r}; use one of {", ".join(MODES)}')
        self.mode, self.bce_weight, self.loss_weight, self.reduction = mode, bce_weight, loss_weight, reduction

    def forward(self, pred, target, mask=None):
        """pred, target (B, 1, H, W) in [0, 1]; mask (B, 1, H, W) for 'masked'/'balanced'. Returns scalar or (B,)."""
        err = (pred - target).abs()
        if self.bce_weight:
            # computed in float32 outside autocast: binary_cross_entropy clamps log(0) at -100
            err = err + self.bce_weight * F.binary_cross_entropy(pred.float(), target.float(), reduction='none')
        if self.mode == 'full':
            loss = err.mean(dim=(1, 2, 3))
        else:
            if mask is None:
                raise ValueError(f'FinPercepMapLoss(mode={self.mode!r}) needs the swap mask')
            inside = (mask > 0.5).to(err.dtype)
            n_in = inside.sum(dim=(1, 2, 3))
            loss = (err * inside).sum(dim=(1, 2, 3)) / n_in.clamp(min=1)
            if self.mode == 'balanced':
                n_out = (1 - inside).sum(dim=(1, 2, 3))
                loss = loss + (err * (1 - inside)).sum(dim=(1, 2, 3)) / n_out.clamp(min=1)
        return self.loss_weight * reduce_batch(loss, self.reduction)
