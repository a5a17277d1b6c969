"""Per-image measurements of one generator on held-out pairs, for the hacking benchmark.

Beside the full-reference metrics of ``sr_evaluation`` every image gets:

- ``reward/<setup>``: the reward each set-up optimises (its final CCL stage), so a run's own reward
  and the start generator's value under the same reward can be compared;
- ``judge_score`` and ``judge_pdm_rate``: the independent judge (a reward model that shares neither
  photos nor SR families with the optimised one);
- ``artifact_index``: mean local Laplacian energy of the output over that of GT (1 = GT's amount of
  fine detail; hacked texture drives it up, blur down);
- ``color_shift``: RMS over the channels of the difference between the output's and GT's mean colour
  (in [0, 1] units): a global cast, which costs PSNR without any texture;
- ``detail_error``: the error's energy above the frequencies an x4 LQ input holds (``error_bands``, in units of
  1e-3 of MSE): invented or lost texture, which no reward model enters into;
- the no-reference metric (``piqe`` by default: classical, no weights).
"""
import json
import os
from copy import deepcopy

import numpy as np
import torch

from finpercep_basicsr.curriculum.schedule import parse_stages
from finpercep_basicsr.hacking.error_bands import error_bands
from finpercep_basicsr.metrics.trivial_detectors import laplacian_energy
from finpercep_basicsr.utils.checkpoint import atomic_write_json
from finpercep_basicsr.utils.errors import UserInputError


def final_reward_options(option_file):
    """The reward options a run ends with: its last CCL stage (or ``train.reward_opt``)."""
    with open(option_file) as f:
        import yaml
        train = (yaml.safe_load(f) or {}).get('train') or {}
    if 'reward_opt' not in train:
        raise UserInputError(f'{option_file}: no train.reward_opt')
    return parse_stages(train)[-1]['reward']


class RewardBank:
    """Frozen reward losses by their options (set-ups sharing a reward network share one copy)."""

    def __init__(self, device='cpu'):
        self.device = device
        self._losses = {}

    def get(self, reward_opt):
        from basicsr.losses import build_loss

        import finpercep_basicsr.losses  # noqa: F401  (registers the losses)
        key = json.dumps(reward_opt, sort_keys=True, default=str)
        if key not in self._losses:
            opt = dict(deepcopy(reward_opt), reduction='none', loss_weight=1.0)
            self._losses[key] = build_loss(opt).to(self.device).eval()
        return self._losses[key]

    @torch.no_grad()
    def reward(self, reward_opt, sr):
        """The reward (minus the loss at weight 1) of each image of ``sr``: (B,) numpy."""
        return (-self.get(reward_opt)(sr)).reshape(-1).cpu().numpy()


def artifact_index(sr, gt, window=7):
    """Mean Laplacian energy of ``sr`` over that of ``gt`` (both (H, W, 3) float in [0, 1])."""
    return float(laplacian_energy(sr, window).mean() / max(float(laplacian_energy(gt, window).mean()), 1e-12))


def color_shift(sr, gt):
    """RMS over channels of mean(sr) - mean(gt) per channel (both (H, W, 3) float in [0, 1])."""
    diff = sr.reshape(-1, sr.shape[-1]).mean(0) - gt.reshape(-1, gt.shape[-1]).mean(0)
    return float(np.sqrt(np.mean(diff ** 2)))


class HackingScorers:
    """The extra per-image scores of the benchmark, as ``{name: fn(sr, gt) -> float}`` for ``evaluate_run``.

    Args:
        rewards (dict): {setup: reward options}.
        judge_net (nn.Module | None): The judge reward network (``score``, ``pdm``).
        no_reference (str | None): pyiqa no-reference metric name.
        pdm_threshold (float): Judge map value counted as an artifact pixel.
        device (str): Torch device.
        scale (int): The SR scale, which sets ``detail_error``'s band.
    """

    def __init__(self, rewards, judge_net=None, no_reference='piqe', pdm_threshold=0.5, device='cpu', scale=4):
        self.bank, self.scale = RewardBank(device), scale
        self.rewards, self.judge, self.threshold = rewards, judge_net, pdm_threshold
        self.nr_name, self.nr, self.nr_lower = None, None, False
        if no_reference:
            from finpercep_basicsr.losses.finpercep_global_iqa_loss import build_pyiqa_metric
            self.nr_name = no_reference
            self.nr = build_pyiqa_metric(no_reference, device=device).eval()
            self.nr_lower = bool(self.nr.lower_better)

    def columns(self, setups=None):
        """The keys ``__call__`` writes; with ``setups``, of their rewards only."""
        names = {f'reward/{setup}' for setup in (self.rewards if setups is None else setups)}
        names |= {'artifact_index', 'color_shift', 'detail_error'}
        if self.judge is not None:
            names |= {'judge_score', 'judge_pdm_rate', 'judge_prefers_gt'}
        return names | ({self.nr_name} if self.nr is not None else set())

    @torch.no_grad()
    def __call__(self, sr, gt):
        """All extra scores of one image pair ((1, 3, H, W) tensors in [0, 1])."""
        row = {f'reward/{setup}': float(self.bank.reward(opt, sr)[0]) for setup, opt in self.rewards.items()}
        if self.judge is not None:
            out = self.judge(sr)
            row['judge_score'] = float(out['score'].mean())
            row['judge_pdm_rate'] = float((out['pdm'] > self.threshold).float().mean())
            # the judge's own sanity check: does it rank GT above this output? (its mean over the start
            # generator's outputs says whether its score gains can be read as quality at all)
            row['judge_prefers_gt'] = float(float(self.judge(gt)['score'].mean()) > row['judge_score'])
        sr_np, gt_np = sr[0].permute(1, 2, 0).cpu().numpy(), gt[0].permute(1, 2, 0).cpu().numpy()
        row['artifact_index'] = artifact_index(sr_np, gt_np)
        row['color_shift'] = color_shift(sr_np, gt_np)
        row['detail_error'] = 1e3 * error_bands(sr_np, gt_np, self.scale)['detail']
        if self.nr is not None:
            row[self.nr_name] = float(self.nr(sr).mean())
        return row


def measure_generator(spec, pairs, metrics, scorers, param_key='params_ema', save_dir=None, desc='', cache=None,
                      required=None):
    """Per-image rows of one generator; cached in ``cache`` (a JSON file) so a rerun skips it.

    A cache is reused only when it holds every image of ``pairs`` with every column of ``required``
    (default: all of ``metrics`` and ``scorers``), so a set-up added to the bench gets measured.

    Args:
        spec (str): Run spec of ``sr_evaluation.load_generator`` (experiment folder or option file).
        pairs (list): ``(name, lq_path, gt_path)``.
        metrics (dict): pyiqa full-reference metrics (``build_metrics``).
        scorers (HackingScorers): The extra scores.
    """
    from finpercep_basicsr.evaluation.sr_evaluation import evaluate_run, load_generator

    required = set(metrics) | scorers.columns() if required is None else set(required)
    if cache and os.path.isfile(cache):
        with open(cache) as f:
            cached = json.load(f)
        if set(cached) == {name for name, _, _ in pairs} and all(required <= set(row) for row in cached.values()):
            return cached
    policy, scale = load_generator(spec, param_key=param_key)
    rows = evaluate_run(policy, scale, pairs, metrics, save_dir=save_dir, desc=desc, scorers=scorers)
    for name, row in rows.items():
        if not all(np.isfinite(v) for v in row.values()):
            bad = [k for k, v in row.items() if not np.isfinite(v)]
            raise UserInputError(f'{spec}: non-finite {", ".join(bad)} on {name} (a collapsed run?)')
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        atomic_write_json(cache, rows, indent=1)
    return rows
