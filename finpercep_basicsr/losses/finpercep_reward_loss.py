"""FinPercep reward as a loss: -(lambda_1 * mean(S) + lambda_2 * (1 - max(M))) from a frozen FinPercep-RM."""
import math
from copy import deepcopy

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from finpercep_basicsr.losses.loss_utils import check_detach_lowpass, check_reduction, reduce_batch, scored_image
from finpercep_basicsr.utils.checkpoint import load_state_dict_into
from finpercep_basicsr.utils.errors import UserInputError

MAP_REDUCTIONS = ('max', 'topk', 'smooth_max')


def build_frozen_reward_net(network_opt, pretrain_path=None, param_key='params_ema', strict_load=True, seed=0,
                            random_init=False):
    """Build a reward network from its options, load a checkpoint, freeze it.

    Args:
        network_opt (dict): Network options with ``type`` (e.g. ``FinPercepRewardNet``).
        pretrain_path (str | None): Checkpoint file; required unless ``random_init``.
        param_key (str): Entry of the checkpoint; falls back to ``'params'`` when absent (a run saved
            without EMA).
        strict_load (bool): Require every key and shape to match.
        seed (int): Seed of the random initialisation, drawn from a forked RNG so that building a
            reward net never changes the training's random stream (needed for bit-identical resume
            when curriculum stages are built lazily).
        random_init (bool): Keep the random initialisation (tests, timing runs): a random reward is
            meaningless, so it must be asked for, never the result of a missing ``pretrain_path``.

    Returns:
        nn.Module: The network in eval mode with ``requires_grad=False`` on every parameter.

    Raises:
        UserInputError: No ``pretrain_path`` without ``random_init``, or both.
    """
    from basicsr.archs import build_network  # late: losses are imported before archs are complete

    if not isinstance(network_opt, dict) or 'type' not in network_opt:
        raise UserInputError(f'reward network options need a "type" key, got {network_opt!r}')
    if pretrain_path is None and not random_init:
        raise UserInputError(f'pretrain_path is not set: the reward network {network_opt["type"]} would score with '
                             f'random weights (give its checkpoint, or random_init: true for a test or timing run)')
    if pretrain_path is not None and random_init:
        raise UserInputError(f'pretrain_path {pretrain_path} and random_init: true contradict each other; keep one')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(deepcopy(network_opt))
    if random_init:
        get_root_logger().warning(f'reward network {network_opt["type"]}: random_init, random weights')
    else:
        load_state_dict_into(net, str(pretrain_path), param_key, strict_load, what='reward model checkpoint',
                             label=f'{network_opt["type"]} {network_opt}')
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def reduce_map(pdm, how='max', topk_ratio=0.01, temperature=0.05):
    """Per-image peak of a degradation map.

    Args:
        pdm (Tensor): (B, 1, H, W) map in [0, 1].
        how (str): ``'max'`` (gradient reaches one pixel), ``'topk'`` (mean of the ``topk_ratio``
            largest pixels) or ``'smooth_max'`` (log-mean-exp with ``temperature``: between the mean
            (large T) and the max (T -> 0), gradient spread over every strongly degraded pixel).
        topk_ratio (float): Fraction of pixels for ``'topk'`` (at least one pixel).
        temperature (float): Temperature of ``'smooth_max'``.

    Returns:
        Tensor: (B,) peak values, in [0, 1] for a map in [0, 1].
    """
    flat = pdm.flatten(1)
    if how == 'max':
        return flat.amax(dim=1)
    if how == 'topk':
        k = max(1, int(round(topk_ratio * flat.size(1))))
        return flat.topk(k, dim=1).values.mean(dim=1)
    if how == 'smooth_max':
        return temperature * (torch.logsumexp(flat / temperature, dim=1) - math.log(flat.size(1)))
    raise UserInputError(f'map_reduce must be one of {", ".join(MAP_REDUCTIONS)}, got {how!r}')


def pdm_artifact_rate(pdm, threshold=0.5):
    """Fraction of pixels of each map above ``threshold``: (B, 1, H, W) -> (B,)."""
    return (pdm > threshold).flatten(1).float().mean(dim=1)


def score_with(net, image, lq=None):
    """``net(image)``, with ``lq`` when the network is LQ-conditioned (a no-reference network ignores it)."""
    if lq is not None and getattr(net, 'lq_condition', False):
        return net(image, lq=lq)
    return net(image)


def nonfinite_terms(sr, names):
    """Terms for an input with NaN/Inf pixels: NaN values still attached to ``sr``'s graph.

    The reward network must not see such an input (it raises); the caller's non-finite guard sees
    the NaN loss and skips the step, while distributed ranks still run the same backward.
    """
    nan = sr.sum() * float('nan')
    return {name: nan.expand(sr.size(0)) for name in names}


class FrozenRewardLoss(nn.Module):
    """Base of the reward losses: a frozen scorer ``net``, per-image rewards, loss = -loss_weight * reduce(R).

    The interface the CCL curriculum (``curriculum.schedule``) and the RLHF model score through:
    ``image_rewards`` (per-image rewards with gradients), ``loss_weight``, ``set_weights`` and ``net``
    (the network co-evolution refreshes). Subclasses set ``net``, ``loss_weight`` and ``reduction``.
    """

    def train(self, mode=True):
        """The scorer stays in eval mode (no dropout/BN updates) whatever the parent does."""
        super().train(mode)
        self.net.eval()
        return self

    def set_weights(self, lambda_score=None, lambda_map=None):
        """Change the run-time weights (the curriculum does); a reward without them ignores the call."""

    def image_rewards(self, sr, gt=None, reference=None, lq=None):
        """Per-image reward R (B,), differentiable w.r.t. ``sr``, and its detached terms.

        Args:
            sr (Tensor): (B, 3, H, W) images in [0, 1].
            gt (Tensor | None): (B, 3, H, W) GT (full-reference scorers need it).
            reference (Tensor | None): (B / G, 3, H, W) the frozen reference generator's outputs for the
                inputs of ``sr``, when ``sr`` holds G consecutive samples of each input; rewards with a
                ceiling (``reference_margin``) cap each sample at its input's reference. None: uncapped.
            lq (Tensor | None): (B, 3, h, w) the input each image was super-resolved from; an LQ-conditioned
                reward network (``lq_condition``) scores with it, every other scorer ignores it.

        Returns:
            tuple[Tensor, dict]: R (B,) and detached terms: ``reward`` (B,) before any ceiling, ``score``, ...
        """
        raise NotImplementedError

    def forward(self, sr, gt=None, return_terms=False, reference=None, lq=None):
        """Loss of ``sr``: -loss_weight * reduce(R); with ``return_terms`` also the terms of ``image_rewards``."""
        reward, terms = self.image_rewards(sr, gt, reference, lq)
        loss = -self.loss_weight * reduce_batch(reward, self.reduction)
        return (loss, terms) if return_terms else loss


@LOSS_REGISTRY.register()
class FinPercepRewardLoss(FrozenRewardLoss):
    """Negative FinPercep reward of a frozen reward model; gradients flow to the input image.

    R = lambda_score * S + lambda_map * (1 - peak(M)), loss = -loss_weight * reduce(R).

    Args:
        network_opt (dict): Options of the reward network (``type: FinPercepRewardNet``, ...).
        pretrain_path (str | None): Reward checkpoint (``net_reward_*.pth``); required unless ``random_init``.
        param_key (str): Entry of the checkpoint (default ``params_ema``, falls back to ``params``).
        strict_load (bool): Require the checkpoint to match the network exactly.
        lambda_score (float): lambda_1, weight of the global score.
        lambda_map (float): lambda_2, weight of the map term (0 = global-only reward).
        map_reduce (str): ``max`` | ``topk`` | ``smooth_max`` (see ``reduce_map``).
        topk_ratio (float): Pixel fraction for ``topk``.
        temperature (float): Temperature for ``smooth_max``.
        clamp_input (bool): Clamp the image to [0, 1] before scoring, so out-of-range pixels cannot
            be used to please the reward model (they get no reward gradient; fidelity terms handle them).
        detach_lowpass (str | float | None): ``'mean'`` or a Gaussian sigma (pixels): that low-pass of the
            image is detached before scoring, so the reward's value is the same but its gradient cannot
            move colour and tone, only detail (``loss_utils.scored_image``). None: the full gradient.
        reference_margin (float | None): A ceiling on each image's reward, relative to the frozen reference
            generator's output for the same input: the loss uses min(R(sr), R(ref) + margin), so an image
            that is already ``margin`` above its reference gets no reward gradient (the clamp against
            over-optimisation; the fidelity terms keep acting). It applies when ``forward`` gets ``reference``
            (the RLHF model passes it, for every ``rlhf.algorithm``); scoring without one measures the
            uncapped reward. None: no ceiling.
        seed (int): Seed of the random initialisation (``random_init``).
        random_init (bool): Random reward weights instead of a checkpoint (tests, timing runs only).
        loss_weight (float): Multiplier of the loss.
        reduction (str): ``mean`` | ``sum`` | ``none`` over the batch, when called as a loss (the RLHF
            model scores per image through ``image_rewards`` and averages, whatever the reduction).

    Input: ``sr`` (B, 3, H, W) in [0, 1]. Output: the loss (scalar, or (B,) for ``none``); with
    ``return_terms=True`` also a dict of detached per-image terms: ``reward`` (before the ceiling),
    ``score``, ``map_peak`` (B,), ``pdm`` (B, 1, H, W), and with ``reference_margin`` ``capped`` (B,):
    1 where the ceiling holds the reward.
    """

    def __init__(self, network_opt, pretrain_path=None, param_key='params_ema', strict_load=True,
                 lambda_score=1.0, lambda_map=1.0, map_reduce='max', topk_ratio=0.01, temperature=0.05,
                 clamp_input=True, detach_lowpass=None, reference_margin=None, seed=0, random_init=False,
                 loss_weight=1.0, reduction='mean'):
        super().__init__()
        if map_reduce not in MAP_REDUCTIONS:
            raise UserInputError(f'FinPercepRewardLoss: map_reduce must be one of {", ".join(MAP_REDUCTIONS)}, '
                                 f'got {map_reduce!r}')
        if temperature <= 0 or not 0 < topk_ratio <= 1:
            raise UserInputError('FinPercepRewardLoss: temperature must be > 0 and topk_ratio in (0, 1]')
        check_reduction('FinPercepRewardLoss', reduction)
        check_detach_lowpass('FinPercepRewardLoss', detach_lowpass)
        if reference_margin is not None and (isinstance(reference_margin, bool)
                                             or not isinstance(reference_margin, (int, float))):
            raise UserInputError(f'FinPercepRewardLoss: reference_margin must be a number or null, '
                                 f'got {reference_margin!r}')
        self.reference_margin = None if reference_margin is None else float(reference_margin)
        self.net = build_frozen_reward_net(network_opt, pretrain_path, param_key, strict_load, seed, random_init)
        self.pretrain_path = pretrain_path
        self.map_reduce, self.topk_ratio, self.temperature = map_reduce, topk_ratio, temperature
        self.clamp_input, self.detach_lowpass = clamp_input, detach_lowpass
        self.loss_weight, self.reduction = loss_weight, reduction
        self.set_weights(lambda_score, lambda_map)

    def set_weights(self, lambda_score=None, lambda_map=None):
        """Change lambda_1 / lambda_2 at run time (the curriculum does); None keeps a weight."""
        if lambda_score is not None:
            self.lambda_score = float(lambda_score)
        if lambda_map is not None:
            self.lambda_map = float(lambda_map)

    def rewards(self, sr, lq=None):
        """Per-image reward and its terms, differentiable w.r.t. ``sr``: dict of (B,) and the map; ``lq``: see
        ``image_rewards``."""
        if not torch.isfinite(sr).all():
            return nonfinite_terms(sr, ('reward', 'score', 'map_peak'))
        out = score_with(self.net, scored_image(sr, self.clamp_input, self.detach_lowpass), lq)
        peak = reduce_map(out['pdm'], self.map_reduce, self.topk_ratio, self.temperature)
        reward = self.lambda_score * out['score'] + self.lambda_map * (1 - peak)
        return {'reward': reward, 'score': out['score'], 'map_peak': peak, 'pdm': out['pdm']}

    def image_rewards(self, sr, gt=None, reference=None, lq=None):
        """R (B,) with the ``reference_margin`` ceiling when ``reference`` is given (``gt`` is not used)."""
        terms = self.rewards(sr, lq)
        reward = terms['reward']
        if self.reference_margin is not None and reference is not None:
            if sr.size(0) % reference.size(0):
                raise ValueError(f'{sr.size(0)} images cannot be grouped over {reference.size(0)} references')
            group = sr.size(0) // reference.size(0)
            with torch.no_grad():  # each reference scored once (with its group's LQ), then aligned with the group
                ceiling = self.rewards(reference, None if lq is None else lq[::group])['reward'] + self.reference_margin
            ceiling = ceiling.repeat_interleave(group)
            capped = reward >= ceiling
            terms['capped'] = capped.float()
            reward = torch.where(capped, ceiling, reward)  # no gradient at the ceiling (minimum would pass half)
        return reward, {k: v.detach() for k, v in terms.items()}
