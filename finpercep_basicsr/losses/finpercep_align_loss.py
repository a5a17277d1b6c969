"""Alignment of the reward score of GT images to a base IQA model (stops score drift between stages)."""

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from finpercep_basicsr.losses.loss_utils import check_reduction, reduce_batch
from finpercep_basicsr.utils.errors import UserInputError


def _pyiqa_metric(name, weights_path):
    import pyiqa
    kwargs = {'pretrained_model_path': weights_path} if weights_path else {}
    try:
        return pyiqa.create_metric(name, as_loss=False, device='cpu', **kwargs)
    except Exception as err:  # pyiqa raises URLError/OSError/RuntimeError when weights are missing
        raise UserInputError(
            f'FinPercepAlignLoss: cannot build pyiqa metric {name!r}: {type(err).__name__}: {err}. Learned pyiqa '
            'metrics download weights; offline, give train.align_opt.weights_path (a local checkpoint) or use '
            'base: checkpoint:<previous-stage RM> instead') from err


def _frozen_reward_net(path, network, param_key):
    """A previous-stage reward network from ``path``; keys must match ``network`` exactly."""
    from finpercep_basicsr.losses.finpercep_reward_loss import build_frozen_reward_net
    if not network:
        raise UserInputError('FinPercepAlignLoss: base checkpoint:<path> needs `network` (the options of the '
                             'network that checkpoint was trained with, e.g. the previous stage\'s network_reward)')
    return build_frozen_reward_net(network, path, param_key, strict_load=True)


@LOSS_REGISTRY.register()
class FinPercepAlignLoss(nn.Module):
    """``|S(I_GT) - (scale * base(I_GT) + shift)|``, lower is better; the base model is frozen.

    Args:
        base (str): 'pyiqa:<metric name>' (e.g. 'pyiqa:musiq'; fails with a clear message when its
            weights are not available offline), 'checkpoint:<path>' (a previous-stage reward model,
            built from ``network``), or 'none' (the caller passes ``target`` scores).
        weights_path (str | None): Local weights for a learned pyiqa metric.
        network (dict | None): Options of the checkpoint's network (``type`` + arguments).
        param_key (str): Key inside the checkpoint ('params_ema' falls back to 'params').
        target_scale (float | None): Scale of the base score; default -1 for pyiqa metrics that are
            lower-is-better (so the target stays higher-is-better), else 1.
        target_shift (float): Added to the scaled base score.
        loss_weight (float): Multiplier of the loss.
        reduction (str): 'mean' | 'sum' | 'none' over the batch.
    """

    def __init__(self, base='none', weights_path=None, network=None, param_key='params_ema', target_scale=None,
                 target_shift=0.0, loss_weight=1.0, reduction='mean'):
        super().__init__()
        check_reduction('FinPercepAlignLoss', reduction)
        self.base_kind, _, ref = str(base).partition(':')
        lower_better = False
        if self.base_kind == 'pyiqa':
            self.base = _pyiqa_metric(ref, weights_path)
            lower_better = bool(getattr(self.base, 'lower_better', False))
        elif self.base_kind == 'checkpoint':
            self.base = _frozen_reward_net(ref, network, param_key)
        elif self.base_kind == 'none':
            self.base = None
        else:
            raise UserInputError(f'FinPercepAlignLoss: base {base!r}: use pyiqa:<metric>, checkpoint:<path> or none')
        if self.base is not None:
            self.base.eval()
            for p in self.base.parameters():
                p.requires_grad_(False)
        self.scale = (-1.0 if lower_better else 1.0) if target_scale is None else float(target_scale)
        self.shift = float(target_shift)
        self.loss_weight, self.reduction = loss_weight, reduction

    def train(self, mode=True):
        super().train(mode)
        if self.base is not None:
            self.base.eval()  # frozen: BatchNorm/dropout of the base never switch to training
        return self

    @torch.no_grad()
    def base_score(self, gt):
        """gt (B, 3, H, W) in [0, 1] -> the target score (B,)."""
        if self.base is None:
            raise ValueError('FinPercepAlignLoss(base=none) needs explicit target scores')
        out = self.base(gt)
        score = out['score'] if isinstance(out, dict) else out
        return self.scale * score.reshape(gt.size(0)).to(gt.dtype) + self.shift

    def forward(self, score_gt, gt=None, target=None):
        """score_gt (B,) of the trained RM; gt (B, 3, H, W) for the base model or target (B,)."""
        if target is None:
            if gt is None:
                raise ValueError('FinPercepAlignLoss needs the GT images or target scores')
            target = self.base_score(gt)
        loss = (score_gt - target.detach()).abs()
        return self.loss_weight * reduce_batch(loss, self.reduction)
