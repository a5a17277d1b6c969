"""Evaluate SR generators on a paired test folder: full-reference IQA, RM score, PDM artifact rate.

Used by ``scripts/evaluate_sr.py``. A run is given as ``NAME=SPEC`` where SPEC is

- an experiment folder (``experiments/<name>``): ``models/net_g_latest.pth`` and the option file
  BasicSR copied there (for ``network_g``);
- an option file (``.yml``): its ``network_g`` and ``path.pretrain_network_g``;
- a checkpoint (``.pth``) with ``--network-opt`` naming an option file for the architecture;
- ``bicubic``: bicubic upscaling (a reference point without a network).

Checkpoints load ``params_ema`` when present (else ``params``).
"""
import argparse
import glob
import json
import os
from copy import deepcopy

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from finpercep_basicsr.utils.checkpoint import load_state_dict_into
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import list_images, read_image, write_rgb8
from finpercep_basicsr.utils.tiling import tiled_upscale

DEFAULT_METRICS = ('psnr', 'ssim', 'fsim', 'vif', 'gmsd')
OPTIONAL_METRICS = ('lpips', 'dists')  # learned: only when their weights are on the machine


def _yaml(path):
    if not os.path.isfile(path):
        raise UserInputError(f'option file not found: {path}')
    with open(path) as f:
        return yaml.safe_load(f)


def load_generator(spec, network_opt_path=None, param_key='params_ema', device='cpu'):
    """Build a generator policy from a run spec (see the module docstring); returns (policy, scale)."""
    from finpercep_basicsr.archs.generator_policy import build_policy

    if spec == 'bicubic':
        return None, None
    if os.path.isdir(spec):
        ymls = sorted(glob.glob(os.path.join(spec, '*.yml')))
        ckpt = os.path.join(spec, 'models', 'net_g_latest.pth')
        if not ymls or not os.path.isfile(ckpt):
            raise UserInputError(f'{spec}: an experiment folder needs an option file (*.yml) and '
                                 'models/net_g_latest.pth')
        opt, ckpt_path = _yaml(ymls[0]), ckpt
    elif spec.endswith(('.yml', '.yaml')):
        opt = _yaml(spec)
        ckpt_path = (opt.get('path') or {}).get('pretrain_network_g')
        param_key = (opt.get('path') or {}).get('param_key_g', param_key)
    else:
        if network_opt_path is None:
            raise UserInputError(f'{spec}: a checkpoint needs --network-opt OPTION.yml for its architecture')
        opt, ckpt_path = _yaml(network_opt_path), spec
    if 'network_g' not in opt:
        raise UserInputError(f'{spec}: the option file has no network_g')
    policy = build_policy(deepcopy(opt['network_g']), opt.get('scale', 4))
    if ckpt_path is not None:
        load_state_dict_into(policy.weights_module(), ckpt_path, param_key, strict=True, what='generator checkpoint')
    return policy.to(device).eval(), policy.scale


def load_reward(reward_opt_path):
    """The frozen reward (``FinPercepRewardLoss``) described by a YAML of its options."""
    from finpercep_basicsr.losses.finpercep_reward_loss import FinPercepRewardLoss
    ropt = {k: v for k, v in _yaml(reward_opt_path).items() if k not in ('type', 'loss_weight', 'reduction')}
    return FinPercepRewardLoss(**ropt)


def pair_folders(lq_dir, gt_dir):
    """(name, lq_path, gt_path) for every LQ image with a GT image of the same stem."""
    def index(folder):
        return {os.path.splitext(os.path.basename(p))[0]: p for p in list_images(folder)}
    lq, gt = index(lq_dir), index(gt_dir)
    pairs = [(name, lq[name], gt[name]) for name in sorted(lq) if name in gt]
    if not pairs:
        raise UserInputError(f'no LQ image in {lq_dir} has a GT image of the same name in {gt_dir}')
    return pairs


def build_metrics(names, device='cpu'):
    """Full-reference metrics by name: pyiqa's, and ``vif_p`` (``metrics.pixel_vif``); learned pyiqa metrics missing
    their weights are skipped with a note."""
    from finpercep_basicsr.losses.finpercep_global_iqa_loss import IQAMetricUnavailableError, build_pyiqa_metric
    from finpercep_basicsr.metrics.pixel_vif import PixelVIF

    metrics, notes = {}, []
    for name in names:
        if name == 'vif_p':
            metrics[name] = (PixelVIF().to(device), False)
            continue
        try:
            metric = build_pyiqa_metric(name, device=device)
        except IQAMetricUnavailableError as err:
            notes.append(f'{name}: skipped ({err})')
            continue
        metrics[name] = (metric.eval(), bool(metric.lower_better))
    return metrics, notes


def to_tensor(img, device):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0).to(device)


@torch.no_grad()
def super_resolve(policy, scale, lq, tile=0, tile_pad=10):
    """(1, 3, h, w) -> (1, 3, s*h, s*w) in [0, 1].

    ``tile`` > 0 processes LQ tiles of that size, each with ``tile_pad`` LQ pixels of context that
    are cropped away after (exact when the pad covers the receptive field, else faint seams).
    """
    if policy is None:
        return F.interpolate(lq, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)
    run = lambda part: policy(part, grad_steps=0)  # noqa: E731
    return tiled_upscale(run, lq, scale, tile, tile_pad, channels_last=False).clamp(0, 1)


def evaluate_run(policy, scale, pairs, metrics, reward=None, pdm_threshold=0.5, crop_border=None, tile=0,
                 tile_pad=10, device='cpu', save_dir=None, desc='', scorers=None):
    """Per-image results of one run: metric values, ``rm_score`` and ``pdm_rate`` (with a reward).

    ``scorers`` (callable ``(sr, gt) -> {name: value}`` on the uncropped (1, 3, H, W) pair) adds columns.
    """
    from finpercep_basicsr.losses.finpercep_reward_loss import pdm_artifact_rate

    rows = {}
    if save_dir is not None:
        os.makedirs(save_dir, exist_ok=True)
    for name, lq_path, gt_path in tqdm(pairs, desc=desc, unit='img', leave=False):
        lq, gt = to_tensor(read_image(lq_path), device), to_tensor(read_image(gt_path), device)
        s = scale or (gt.shape[-1] // lq.shape[-1])
        sr = super_resolve(policy, s, lq, tile, tile_pad)
        h, w = min(sr.shape[-2], gt.shape[-2]), min(sr.shape[-1], gt.shape[-1])
        sr, gt = sr[..., :h, :w], gt[..., :h, :w]
        if save_dir is not None:
            write_rgb8(os.path.join(save_dir, f'{name}.png'), sr[0].permute(1, 2, 0).cpu().numpy())
        c = s if crop_border is None else crop_border
        sr_c, gt_c = (sr[..., c:-c, c:-c], gt[..., c:-c, c:-c]) if c > 0 else (sr, gt)
        row = {m: float(fn(sr_c, gt_c).mean()) for m, (fn, _) in metrics.items()}
        if reward is not None:
            out = reward.net(sr)
            row['rm_score'] = float(out['score'].mean())
            row['pdm_rate'] = float(pdm_artifact_rate(out['pdm'], pdm_threshold).mean())
        if scorers is not None:
            row.update(scorers(sr, gt))
        rows[name] = row
    return rows


def averages(rows):
    keys = list(next(iter(rows.values())))
    return {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}


def markdown_table(results, better):
    """Runs side by side: one row per run, one column per metric (arrow = better direction)."""
    runs = list(results)
    cols = list(results[runs[0]]['mean'])
    head = '| run | ' + ' | '.join(f'{c} {better.get(c, "")}'.strip() for c in cols) + ' |'
    lines = [head, '|' + '---|' * (len(cols) + 1)]
    for run in runs:
        lines.append(f'| {run} | ' + ' | '.join(f'{results[run]["mean"][c]:.4f}' for c in cols) + ' |')
    return '\n'.join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', action='append', required=True, metavar='NAME=SPEC', help='a run to evaluate (repeat)')
    p.add_argument('--lq', required=True, help='folder of LQ images')
    p.add_argument('--gt', required=True, help='folder of GT images (same file stems)')
    p.add_argument('--network-opt', help='option file with network_g, for runs given as a .pth checkpoint')
    p.add_argument('--param-key', default='params_ema')
    p.add_argument('--reward-opt', help='YAML with reward options (network_opt, pretrain_path, param_key) for '
                                        'the RM score and the PDM artifact rate')
    p.add_argument('--pdm-threshold', type=float, default=0.5)
    p.add_argument('--metrics', default=','.join(DEFAULT_METRICS), help='pyiqa full-reference metrics')
    p.add_argument('--crop-border', type=int, default=None, help='pixels cropped before metrics (default: scale)')
    p.add_argument('--tile', type=int, default=0, help='LQ tile size for large images (0: whole image)')
    p.add_argument('--tile-pad', type=int, default=10, help='LQ context pixels around each tile')
    p.add_argument('--max-images', type=int, default=0)
    p.add_argument('--save-images', action='store_true', help='write SR images to OUT/<run>/')
    p.add_argument('--out', required=True, help='output folder for results.json and results.md')
    return p.parse_args(argv)


@torch.no_grad()  # scoped: a global set_grad_enabled(False) would leak into in-process callers
def main(argv=None):
    import finpercep_basicsr.archs  # noqa: F401  (registers archs)

    args = parse_args(argv)
    pairs = pair_folders(args.lq, args.gt)[:args.max_images or None]
    runs = []
    for item in args.run:
        if '=' not in item:
            raise UserInputError(f'--run {item!r}: expected NAME=SPEC')
        runs.append(item.split('=', 1))
    metrics, notes = build_metrics([m for m in args.metrics.split(',') if m])
    reward = load_reward(args.reward_opt) if args.reward_opt else None
    results = {}
    for name, spec in runs:
        policy, scale = load_generator(spec, args.network_opt, args.param_key)
        save_dir = os.path.join(args.out, name) if args.save_images else None
        rows = evaluate_run(policy, scale, pairs, metrics, reward, args.pdm_threshold, args.crop_border, args.tile,
                            args.tile_pad, save_dir=save_dir, desc=name)
        results[name] = {'spec': spec, 'mean': averages(rows), 'per_image': rows}
    better = {m: ('↓' if lower else '↑') for m, (_, lower) in metrics.items()}
    better.update({'rm_score': '↑', 'pdm_rate': '↓'})
    os.makedirs(args.out, exist_ok=True)
    table = markdown_table(results, better)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump({'images': len(pairs), 'pdm_threshold': args.pdm_threshold, 'notes': notes, 'runs': results},
                  f, indent=2)
    with open(os.path.join(args.out, 'results.md'), 'w') as f:
        f.write(f'{len(pairs)} images; PDM artifact rate = fraction of pixels with M > {args.pdm_threshold}\n\n')
        f.write(table + '\n' + ''.join(f'\n- {n}' for n in notes) + '\n')
    print(table)
    for n in notes:
        print(n)
    return 0
