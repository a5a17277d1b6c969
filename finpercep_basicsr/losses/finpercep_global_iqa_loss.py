"""Global-only reward as a loss (the baseline that gets hacked): a stage-0 RM score, NIQE or PIQE, a pyiqa metric."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY

from finpercep_basicsr.losses.finpercep_reward_loss import (FrozenRewardLoss, build_frozen_reward_net, nonfinite_terms,
                                                           score_with)
from finpercep_basicsr.losses.loss_utils import check_detach_lowpass, check_reduction, scored_image
from finpercep_basicsr.metrics.niqe_torch import NIQE
from finpercep_basicsr.metrics.piqe_torch import PIQE
from finpercep_basicsr.utils.errors import UserInputError

# classical no-reference metrics with a pixel gradient (lower is better), to hack
DIFFERENTIABLE_METRICS = {'niqe': NIQE, 'piqe': PIQE}


class IQAMetricUnavailableError(UserInputError):
    """A pyiqa metric cannot be built here (typically: learned weights would need a download)."""


def build_pyiqa_metric(name, device='cpu', **kwargs):
    """``pyiqa.create_metric(name, as_loss=True)`` with one clear error when it cannot be built.

    Learned pyiqa metrics (MUSIQ, MANIQA, CLIP-IQA, LPIPS, ...) download their weights on first use;
    offline that fails with a network error. Classical ones (psnr, ssim, fsim, vif, gmsd, ...) work.
    """
    import pyiqa

    if name not in pyiqa.list_models():
        raise UserInputError(f'pyiqa has no metric {name!r}')
    try:
        # one score per image (as_loss alone averages the batch into one number)
        return pyiqa.create_metric(name, as_loss=True, device=device, **{'loss_reduction': 'none', **kwargs})
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise IQAMetricUnavailableError(
            f'pyiqa metric {name!r} could not be built ({type(err).__name__}: {err}). Learned metrics need '
            f'their weights: put the file in ~/.cache/torch/hub/pyiqa/ (or pass pretrained_model_path) '
            f'on a machine without internet access') from err


@LOSS_REGISTRY.register()
class FinPercepGlobalIQALoss(FrozenRewardLoss):
    """Negative global quality score: R = S, loss = -loss_weight * reduce(R).

    The source is a reward-model checkpoint (only its global score is used, e.g. RM_0), a classical no-reference
    metric with a pixel gradient (``metric: niqe``: BasicSR's NIQE, ``metrics.niqe_torch``, images of at least two
    96 x 96 blocks; ``metric: piqe``: PIQE, ``metrics.piqe_torch``) or a pyiqa metric (``metric: pyiqa:<name>``;
    full-reference metrics need ``gt``; pyiqa's own PIQE and NIQE give no useful gradient). Lower-is-better metrics
    are negated so that the reward is always higher-is-better.

    Args:
        metric (str): ``rm``, ``niqe``, ``piqe`` or ``pyiqa:<name>``.
        network_opt, pretrain_path, param_key, strict_load, seed, random_init: Reward network
            (``metric: rm``), as in ``FinPercepRewardLoss``: ``pretrain_path`` is required unless ``random_init``.
        metric_opt (dict | None): Extra keyword arguments of ``pyiqa.create_metric``.
        clamp_input (bool): Clamp the image to [0, 1] before scoring.
        detach_lowpass (str | float | None): As in ``FinPercepRewardLoss``: the reward's gradient moves
            detail only, not colour and tone.
        loss_weight (float): Multiplier of the loss.
        reduction (str): ``mean`` | ``sum`` | ``none`` (as in ``FinPercepRewardLoss``).

    Input: ``sr`` (B, 3, H, W) in [0, 1], ``gt`` (B, 3, H, W) for full-reference metrics.
    Output as ``FinPercepRewardLoss`` (terms ``reward`` and ``score``; ``pdm`` for an RM source); it has
    no ceiling, so a ``reference`` changes nothing.
    """

    def __init__(self, metric='rm', network_opt=None, pretrain_path=None, param_key='params_ema',
                 strict_load=True, seed=0, random_init=False, metric_opt=None, clamp_input=True,
                 detach_lowpass=None, loss_weight=1.0, reduction='mean'):
        super().__init__()
        check_reduction('FinPercepGlobalIQALoss', reduction)
        check_detach_lowpass('FinPercepGlobalIQALoss', detach_lowpass)
        self.metric_name = metric
        self.clamp_input, self.detach_lowpass = clamp_input, detach_lowpass
        self.loss_weight, self.reduction = loss_weight, reduction
        self.needs_gt = False
        self.sign = 1.0
        if metric == 'rm':
            if network_opt is None:
                raise UserInputError('FinPercepGlobalIQALoss with metric "rm" needs network_opt')
            self.net = build_frozen_reward_net(network_opt, pretrain_path, param_key, strict_load, seed, random_init)
        elif metric in DIFFERENTIABLE_METRICS:
            self.net = DIFFERENTIABLE_METRICS[metric]()
            self.sign = -1.0
        elif isinstance(metric, str) and metric.startswith('pyiqa:'):
            self.net = build_pyiqa_metric(metric[len('pyiqa:'):], **(metric_opt or {}))
            for p in self.net.parameters():
                p.requires_grad_(False)
            self.needs_gt = self.net.metric_mode == 'FR'
            self.sign = -1.0 if self.net.lower_better else 1.0
        else:
            raise UserInputError(f'FinPercepGlobalIQALoss: metric must be "rm", "niqe", "piqe" or "pyiqa:<name>", '
                                 f'got {metric!r}')
        self.net.eval()

    def rewards(self, sr, gt=None, lq=None):
        if not torch.isfinite(sr).all():
            return nonfinite_terms(sr, ('reward', 'score'))
        x = scored_image(sr, self.clamp_input, self.detach_lowpass)
        if self.metric_name == 'rm':
            out = score_with(self.net, x, lq)
            return {'reward': out['score'], 'score': out['score'], 'pdm': out['pdm']}
        if self.needs_gt:
            if gt is None:
                raise UserInputError(f'{self.metric_name} is a full-reference metric: the reward needs gt')
            score = self.net(x, gt)
        else:
            score = self.net(x)
        score = score.reshape(sr.size(0)).to(sr.dtype)
        return {'reward': self.sign * score, 'score': score}

    def image_rewards(self, sr, gt=None, reference=None, lq=None):
        """R = S (B,) and its detached terms; ``reference`` is accepted for the common interface (no ceiling); ``lq``
        reaches an LQ-conditioned reward model."""
        terms = self.rewards(sr, gt, lq)
        return terms['reward'], {k: v.detach() for k, v in terms.items()}
