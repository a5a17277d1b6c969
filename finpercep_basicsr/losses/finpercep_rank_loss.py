"""Triplet ranking hinge for the reward model: S(I_SR) < S(I_syn) < S(I_GT)."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from finpercep_basicsr.losses.loss_utils import check_reduction, reduce_batch


@LOSS_REGISTRY.register()
class FinPercepRankLoss(nn.Module):
    """``relu(m1 - (S_syn - S_sr)) + relu(m2 - (S_gt - S_syn))``, lower is better.

    Args:
        margin_sr_syn (float): m1, the least gap between the syn and the SR score.
        margin_syn_gt (float): m2, the least gap between the GT and the syn score.
        loss_weight (float): Multiplier of the loss.
        reduction (str): 'mean' | 'sum' | 'none' over the batch.
    """

    def __init__(self, margin_sr_syn=0.1, margin_syn_gt=0.1, loss_weight=1.0, reduction='mean'):
        super().__init__()
        check_reduction('FinPercepRankLoss', reduction)
        self.m1, self.m2 = margin_sr_syn, margin_syn_gt
        self.loss_weight, self.reduction = loss_weight, reduction

    def forward(self, score_sr, score_syn, score_gt):
        """Scores are (B,) tensors; returns a scalar (or (B,) for reduction='none')."""
        loss = F.relu(self.m1 - (score_syn - score_sr)) + F.relu(self.m2 - (score_gt - score_syn))
        return self.loss_weight * reduce_batch(loss, self.reduction)
