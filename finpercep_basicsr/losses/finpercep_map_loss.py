"""L1 between the predicted Perceptual Degradation Map and its label, over the image or the swap region."""
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
        loss_weight (float): Multiplier of the loss.
        reduction (str): 'mean' | 'sum' | 'none' over the batch.
    """

    def __init__(self, mode='full', loss_weight=1.0, reduction='mean'):
        super().__init__()
        check_reduction('FinPercepMapLoss', reduction)
        if mode not in MODES:
            raise ValueError(f'FinPercepMapLoss: unknown mode {mode!r}; use one of {", ".join(MODES)}')
        self.mode, self.loss_weight, self.reduction = mode, loss_weight, reduction

    def forward(self, pred, target, mask=None):
        """pred, target (B, 1, H, W) in [0, 1]; mask (B, 1, H, W) for 'masked'/'balanced'. Returns scalar or (B,)."""
        err = (pred - target).abs()
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
