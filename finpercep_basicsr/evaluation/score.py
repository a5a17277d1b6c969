"""Score images with a trained FinPercep-RM: global scores (CSV + JSON) and PDM heatmap overlays (PNG).

    python -m finpercep_basicsr.evaluation.score --opt options/train/FinPercepRM/stage3.yml photos/ --out scored/
    python -m finpercep_basicsr.evaluation.score --ckpt net_reward_best_map_auc.pth --network-yml net.yml \
        a.png b.jpg --out scored/

``--opt`` takes ``network_reward`` (and, without ``--ckpt``, ``path.pretrain_network_reward``) from an
option file; ``--network-yml`` is a YAML file holding ``network_reward`` or the network options.
Images larger than ``--tile`` are scored in overlapping tiles whose maps are blended with linear
ramps (no seams); the image score is the pixel-weighted mean of the tile scores. Unreadable images
are reported (naming the file) and skipped. Writes ``scores.csv``, ``scores.json``,
``overlays/<name>.png`` (image | heatmap overlay) and ``maps/<name>.png`` (16-bit PDM).

An LQ-conditioned model (``network_reward.lq_condition``) also takes the images' LQ inputs, ``--lq DIR`` (the same
file names); without ``--lq`` it scores as a no-reference model.
"""
import argparse
import csv
import json
import os
import sys
from copy import deepcopy

import cv2
import numpy as np
import torch

from finpercep_basicsr.utils.errors import UserInputError, exit_code_for_user_errors
from finpercep_basicsr.utils.image_io import list_images



def load_reward_net(opt=None, ckpt=None, network_yml=None, param_key=None, device='cpu'):
    """Build ``FinPercepRewardNet`` from options and load a checkpoint strictly.

    Returns:
        tuple[nn.Module, str]: The network in eval mode on ``device`` and the checkpoint path.

    Raises:
        UserInputError: Missing options/checkpoint, or a checkpoint of another stage/arch (the
            message lists the mismatched keys).
    """
    import yaml
    from basicsr.utils.registry import ARCH_REGISTRY

    import finpercep_basicsr.archs  # noqa: F401  (registers the arch)
    from finpercep_basicsr.utils.checkpoint import load_state_dict_into
    from finpercep_basicsr.utils.option_check import load_option_file
    network = None
    if network_yml:
        with open(network_yml) as f:
            loaded = yaml.safe_load(f) or {}
        network = loaded.get('network_reward', loaded)
    if opt:
        options = load_option_file(opt)
        network = network or options.get('network_reward')
        ckpt = ckpt or (options.get('path') or {}).get('pretrain_network_reward')
        param_key = param_key or (options.get('path') or {}).get('param_key_reward')
    if not network or 'type' not in network:
        raise UserInputError('no network options: give --opt OPTIONS.yml or --network-yml with network_reward')
    if not ckpt:
        raise UserInputError('no checkpoint: give --ckpt or set path.pretrain_network_reward in --opt')
    network = deepcopy(network)
    net = ARCH_REGISTRY.get(network.pop('type'))(**network)
    load_state_dict_into(net, ckpt, param_key, strict=True, what='reward checkpoint',
                         label=f'{net.__class__.__name__}(stage={getattr(net, "stage", "?")})')
    return net.to(device).eval(), ckpt


def images_of(inputs):
    """Image files of the given files and folders (folders: sorted, non-recursive)."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += list_images(item)
        elif os.path.exists(item):
            files.append(item)
        else:
            raise UserInputError(f'no such image or folder: {item}')
    return files


def tile_starts(length, tile, overlap):
    """Start offsets covering ``length`` with windows of ``tile`` overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def ramp(length, start, total, overlap):
    """1-D blend weights of a window: linear ramps over ``overlap`` pixels on sides inside the image."""
    w = np.ones(length, np.float32)
    if overlap <= 0:
        return w
    ramp_up = (np.arange(min(overlap, length), dtype=np.float32) + 0.5) / overlap
    if start > 0:
        w[:len(ramp_up)] = np.minimum(w[:len(ramp_up)], ramp_up)
    if start + length < total:
        w[length - len(ramp_up):] = np.minimum(w[length - len(ramp_up):], ramp_up[::-1])
    return w


def tiles_of(h, w, tile, overlap):
    """(top, left, tile_h, tile_w) boxes covering an (h, w) image."""
    th, tw = min(h, tile), min(w, tile)
    return [(t, left, th, tw) for t in tile_starts(h, tile, overlap) for left in tile_starts(w, tile, overlap)]


def _tile_batch(arrays, chunk, device):
    """The (idx, box) tiles of ``chunk`` cut from ``arrays`` (H, W, 3), as one (N, 3, th, tw) tensor."""
    stack = np.stack([arrays[idx][t:t + th, left:left + tw] for idx, (t, left, th, tw) in chunk])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous().to(device)


@torch.no_grad()
def score_images(net, images, tile=512, overlap=64, batch_size=4, device='cpu', lqs=None):
    """Score a list of RGB float images (H, W, 3) in [0, 1].

    Tiles of every image are grouped by shape and run ``batch_size`` at a time; maps are blended
    with ``ramp`` weights, so overlapping tiles join without seams. ``lqs`` (an LQ-conditioned network): each
    image's LQ input (h, w, 3), upsampled to the image's size as the network does it and tiled with it.

    Returns:
        list[tuple[float, np.ndarray, int]]: (score, PDM (H, W) in [0, 1], number of tiles) per image.
    """
    if lqs is not None:
        from finpercep_basicsr.metrics.trivial_detectors import upsample_lq
        if not getattr(net, 'lq_condition', False):
            raise UserInputError('this reward model is not LQ-conditioned (network_reward.lq_condition): score '
                                 'without LQ images')
        lqs = [upsample_lq(lq, img.shape) for lq, img in zip(lqs, images, strict=True)]
    jobs = {}
    for idx, img in enumerate(images):
        for box in tiles_of(img.shape[0], img.shape[1], tile, overlap):
            jobs.setdefault(box[2:], []).append((idx, box))
    acc = [np.zeros(img.shape[:2], np.float32) for img in images]
    weights = [np.zeros(img.shape[:2], np.float32) for img in images]
    score_sum = [0.0] * len(images)
    pixels = [0] * len(images)
    counts = [0] * len(images)
    for shape, items in jobs.items():
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            x = _tile_batch(images, chunk, device)
            out = net(x) if lqs is None else net(x, lq=_tile_batch(lqs, chunk, device))
            for (idx, (t, left, th, tw)), s, m in zip(chunk, out['score'].float().cpu().numpy(),
                                                      out['pdm'][:, 0].float().cpu().numpy()):
                h, w = images[idx].shape[:2]
                wgt = np.outer(ramp(th, t, h, overlap), ramp(tw, left, w, overlap))
                acc[idx][t:t + th, left:left + tw] += m * wgt
                weights[idx][t:t + th, left:left + tw] += wgt
                score_sum[idx] += float(s) * th * tw
                pixels[idx] += th * tw
                counts[idx] += 1
    return [(score_sum[i] / pixels[i], acc[i] / np.maximum(weights[i], 1e-8), counts[i]) for i in range(len(images))]


def overlay(img, pdm):
    """Image | heatmap overlay strip, 8-bit BGR for cv2.imwrite (red = degraded)."""
    bgr = cv2.cvtColor((np.clip(img, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    heat = cv2.applyColorMap((np.clip(pdm, 0, 1) * 255).round().astype(np.uint8), cv2.COLORMAP_JET)
    return np.concatenate([bgr, cv2.addWeighted(bgr, 0.5, heat, 0.5, 0)], axis=1)


def _unique_name(path, used):
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = stem, 1
    while name in used:
        name, n = f'{stem}_{n}', n + 1
    used.add(name)
    return name


def _read_lq(folder, path):
    """The LQ input of the image ``path``: the file of the same name in ``folder``."""
    from finpercep_basicsr.utils.image_io import read_image
    lq_path = os.path.join(folder, os.path.basename(path))
    if not os.path.isfile(lq_path):
        raise UserInputError(f'no LQ image {lq_path} for {path} (--lq needs the same file names)')
    return read_image(lq_path)


def run(args):
    from finpercep_basicsr.utils.image_io import read_image, write_map16
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available() else
                          ('cpu' if args.device == 'auto' else args.device))
    net, ckpt = load_reward_net(args.opt, args.ckpt, args.network_yml, args.param_key, device)
    if args.lq and not os.path.isdir(args.lq):
        raise UserInputError(f'--lq {args.lq} is not a folder')
    files = images_of(args.inputs)
    if not files:
        raise UserInputError(f'no images found in {", ".join(args.inputs)}')
    for sub in ('overlays', 'maps'):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    rows, skipped, used = [], [], set()
    from tqdm import tqdm
    for start in tqdm(range(0, len(files), args.batch_size), desc='scoring', unit='batch', disable=args.quiet):
        loaded = []
        for path in files[start:start + args.batch_size]:
            try:
                loaded.append((path, read_image(path), _read_lq(args.lq, path) if args.lq else None))
            except UserInputError as err:
                print(f'skipping {path}: {err}', file=sys.stderr)
                skipped.append({'file': path, 'error': str(err)})
        if not loaded:
            continue
        results = score_images(net, [img for _, img, _ in loaded], args.tile, args.tile_overlap, args.batch_size,
                               device, [lq for _, _, lq in loaded] if args.lq else None)
        for (path, img, _), (score, pdm, n_tiles) in zip(loaded, results):
            name = _unique_name(path, used)
            row = {'file': path, 'name': name, 'score': round(score, 6), 'pdm_mean': round(float(pdm.mean()), 6),
                   'pdm_max': round(float(pdm.max()), 6), 'degraded_fraction': round(float((pdm > 0.5).mean()), 6),
                   'height': img.shape[0], 'width': img.shape[1], 'tiles': n_tiles}
            if net.has_map:
                row['overlay'] = os.path.join('overlays', f'{name}.png')
                row['map'] = os.path.join('maps', f'{name}.png')
                cv2.imwrite(os.path.join(args.out, row['overlay']), overlay(img, pdm))
                write_map16(os.path.join(args.out, row['map']), pdm)
            rows.append(row)
    fields = ['file', 'name', 'score', 'pdm_mean', 'pdm_max', 'degraded_fraction', 'height', 'width', 'tiles']
    with open(os.path.join(args.out, 'scores.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    summary = {'checkpoint': ckpt, 'stage': net.stage, 'has_map': net.has_map, 'device': str(device), 'lq': args.lq,
               'tile': args.tile, 'tile_overlap': args.tile_overlap, 'results': rows, 'skipped': skipped}
    with open(os.path.join(args.out, 'scores.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    if not net.has_map:
        print('stage-0 reward model: global scores only, no degradation maps written')
    print(f'scored {len(rows)} image(s), skipped {len(skipped)}; results in {args.out}')
    return 0 if rows else 2


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m finpercep_basicsr.evaluation.score',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('inputs', nargs='+', help='image files and/or folders')
    parser.add_argument('--opt', help='option file with network_reward (and path.pretrain_network_reward)')
    parser.add_argument('--ckpt', help='reward checkpoint (net_reward_*.pth)')
    parser.add_argument('--network-yml', help='YAML with network_reward (when --opt is not given)')
    parser.add_argument('--param-key', default=None, help='params_ema or params (default: params_ema if present)')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--tile', type=int, default=512, help='tile size for large images (pixels)')
    parser.add_argument('--tile-overlap', type=int, default=64)
    parser.add_argument('--lq', metavar='DIR', help='LQ-conditioned models: the LQ inputs of the images (same file '
                        'names); without it they score as no-reference models')
    parser.add_argument('--quiet', action='store_true')
    args = parser.parse_args(argv)
    if args.tile_overlap >= args.tile or args.tile < 32 or args.batch_size < 1:
        parser.error('need --tile >= 32, 0 <= --tile-overlap < --tile and --batch-size >= 1')
    return exit_code_for_user_errors(run, args)


if __name__ == '__main__':
    sys.exit(main())
