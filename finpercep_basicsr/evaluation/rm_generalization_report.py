"""Command line of the reward-model generalisation benchmark: options, the printed table and the JSON file.

    python scripts/eval_rm_generalization.py --reward-opt options/pretrained/finpercep_rm.yml \
        --fgr datasets/fgr_heldout [MORE_FGR ...] [--family-map 'realesr-animevideov3.*=animevideo'] \
        [--hack-start START_DIR --hack-out HACKED_DIR --hack-gt GT_DIR [--hack-lq LQ_DIR]] [--lq-floors] \
        --out results/rm_generalization.json

The metrics are described in ``finpercep_basicsr.evaluation.rm_generalization``. The JSON file holds::

    {"reward": {"opt", "checkpoint", "stage", "has_map"},
     "settings": {"window", "label_thr", "hack_error_thr", "max_size", "tile", "tile_overlap", ...},
     "detectors": ["rm", "constant", "laplacian", "blur"],   # + "lq_residual", "lq_agreement" with --lq-floors
     "fgr": {"folders": [...],
             "families": {FAMILY: {"samples", "sr_models", "metrics": {DETECTOR: {METRIC: value}},
                                   "best_trivial": {METRIC: {"detector", "value"}},
                                   "rm_beats_trivial": {METRIC: bool}}},
             "pooled": {same keys as a family},
             "rm_beats_trivial_on_every_family": {METRIC: bool}},
     "hacking": {"start", "hacked", "gt", "images", "added_error_fraction", "metrics", "best_trivial",
                 "rm_beats_trivial"}}

Undefined values (an AUC where a mask has one class only) are null.
"""
import argparse
import json
import math
import os

from finpercep_basicsr.evaluation.rm_generalization import (FGR_METRICS, HACK_METRICS, POOLED, build_detectors,
                                                            compare, evaluate_fgr, evaluate_hacking, fgr_samples,
                                                            hack_triplets, parse_family_map, reward_detector)
from finpercep_basicsr.utils.errors import UserInputError

_METRIC_TITLES = {
    'map_auc': 'pixel ROC-AUC of the syn map vs the swap mask (> 0.5)',
    'map_auc_label': 'the same vs the label map > LABEL_THR',
    'triplet': 'fraction with S(gt) > S(syn) > S(sr)',
    'srcc': 'SRCC of the score vs -mean|I - GT| over sr, syn, gt',
    'start_above_hacked': 'share of images with score(start) > score(hacked)',
    'image_auc': 'image ROC-AUC of the map mean, hacked (positive) vs start',
    'pixel_auc': 'pixel ROC-AUC of the hacked map vs pixels where hacking added error',
}


def add_comparison(group, names):
    """Add ``best_trivial`` and ``rm_beats_trivial`` to a group holding ``metrics``."""
    group['best_trivial'], group['rm_beats_trivial'] = compare(group['metrics'], names)
    return group


def jsonable(obj):
    """Floats rounded to 6 digits, NaN as None (strict JSON), recursively."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def _width(detectors):
    return max(8, *(len(d) for d in detectors))


def _num(v, width=8):
    return f'{"n/a":>{width}s}' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:{width}.3f}'


def _rows(label, n, group, names, detectors):
    lines = []
    for i, m in enumerate(names):
        best, beats = group['best_trivial'][m], group['rm_beats_trivial'][m]
        best_text = f'{best["detector"]:9s} {best["value"]:6.3f}' if best else f'{"n/a":16s}'
        verdict = 'n/a' if beats is None else ('yes' if beats else 'no')
        head = f'{label:24s} {n:5d}' if i == 0 else ' ' * 30
        lines.append(f'{head} {m:18s} ' + ' '.join(_num(group['metrics'][d][m], _width(detectors)) for d in detectors)
                     + f'  {best_text}  {verdict}')
    return lines


def _header(first, detectors):
    return (f'{first:24s} {"n":>5s} {"metric":18s} ' + ' '.join(f'{d:>{_width(detectors)}s}' for d in detectors)
            + f'  {"best trivial":16s}  RM beats it')


def format_report(result):
    """The printed tables (FGR per family + pooled, then the hacking check)."""
    lines = []
    fgr, hack = result.get('fgr'), result.get('hacking')
    settings, detectors = result['settings'], result['detectors']
    if fgr:
        lines.append(f'FGR generalisation ({", ".join(fgr["folders"])}); Laplacian window {settings["window"]} px, '
                     f'LABEL_THR {settings["label_thr"]}')
        lines += [f'  {m}: {_METRIC_TITLES[m]}' for m in FGR_METRICS]
        lines.append(_header('family', detectors))
        for family, group in fgr['families'].items():
            lines += _rows(family, group['samples'], group, FGR_METRICS, detectors)
        lines += _rows(POOLED, fgr[POOLED]['samples'], fgr[POOLED], FGR_METRICS, detectors)
        for m, ok in fgr['rm_beats_trivial_on_every_family'].items():
            failing = [f for f, g in fgr['families'].items() if not g['rm_beats_trivial'][m]]
            lines.append(f'RM beats the best trivial detector on every family, {m}: {"yes" if ok else "no"}'
                         + (f' (not on: {", ".join(failing)})' if failing else ''))
    if hack:
        lines.append('')
        lines.append(f'Hacking check ({hack["images"]} images; {100 * hack["added_error_fraction"]:.1f} % of pixels '
                     f'with added error > {settings["hack_error_thr"]})')
        lines += [f'  {m}: {_METRIC_TITLES[m]}' for m in HACK_METRICS]
        lines.append(_header('', detectors))
        lines += _rows('hacked vs start', hack['images'], hack, HACK_METRICS, detectors)
    return '\n'.join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='eval_rm_generalization.py', description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--reward-opt', required=True,
                   help='option file with network_reward and path.pretrain_network_reward (as score.py reads)')
    p.add_argument('--ckpt', help='reward checkpoint (overrides path.pretrain_network_reward)')
    p.add_argument('--param-key', default=None, help='params_ema or params (default: params_ema if present)')
    p.add_argument('--fgr', nargs='+', default=[], metavar='DIR', help='held-out FGR folders')
    p.add_argument('--family-map', nargs='+', default=[], metavar='NAME=FAMILY',
                   help='regroup sr_model names into families (exact name or full-match regex; first rule wins)')
    p.add_argument('--families', nargs='+', default=None, help='evaluate only these families (after --family-map)')
    p.add_argument('--limit', type=int, default=0, help='at most N samples per family (0: all)')
    p.add_argument('--label-thr', type=float, default=0.1, help='label map threshold of map_auc_label')
    p.add_argument('--hack-start', metavar='DIR', help="the start generator's outputs")
    p.add_argument('--hack-out', metavar='DIR', help="the hacked generator's outputs (same file names)")
    p.add_argument('--hack-gt', metavar='DIR', help='the GT images (same file names)')
    p.add_argument('--hack-lq', metavar='DIR', help='the LQ inputs of the hacked images (same file names; for '
                   '--lq-floors)')
    p.add_argument('--rm-without-lq', action='store_true',
                   help='score an LQ-conditioned reward model without its LQ (its no-reference fallback)')
    p.add_argument('--lq-floors', action='store_true',
                   help='also measure the LQ-aware floors (lq_residual, lq_agreement): from the FGR sets\' lq/ '
                   'images and --hack-lq; printed beside, not in "best trivial"')
    p.add_argument('--hack-error-thr', type=float, default=0.05,
                   help='added error (mean over channels, [0, 1] units) that marks a hacked pixel')
    p.add_argument('--window', type=int, default=7, help='box window of the Laplacian energy (pixels)')
    p.add_argument('--max-size', type=int, default=0, help='score the central N x N crop of each image (0: all)')
    p.add_argument('--tile', type=int, default=512, help='reward network tile size for large images')
    p.add_argument('--tile-overlap', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--out', required=True, help='JSON file to write')
    args = p.parse_args(argv)
    hack = [args.hack_start, args.hack_out, args.hack_gt]
    if any(hack) and not all(hack):
        p.error('--hack-start, --hack-out and --hack-gt go together')
    if not args.fgr and not any(hack):
        p.error('nothing to evaluate: give --fgr DIR and/or --hack-start/--hack-out/--hack-gt')
    if args.hack_lq and not all(hack):
        p.error('--hack-lq goes with --hack-start, --hack-out and --hack-gt')
    if args.lq_floors and all(hack) and not args.hack_lq:
        p.error('--lq-floors with the hacking check needs the hacked images\' LQ inputs: --hack-lq DIR')
    if (args.window < 1 or args.limit < 0 or args.max_size < 0 or args.tile < 32
            or not 0 <= args.tile_overlap < args.tile):
        p.error('need --window >= 1, --limit >= 0, --max-size >= 0, --tile >= 32 and 0 <= --tile-overlap < --tile')
    return args


def run(args):
    """Load the reward model, evaluate, print the tables, write the JSON; returns the result dict."""
    import torch

    from finpercep_basicsr.evaluation.score import load_reward_net
    if args.threads:
        torch.set_num_threads(args.threads)
    net, ckpt = load_reward_net(args.reward_opt, args.ckpt, param_key=args.param_key, device=args.device)
    rm_detect = reward_detector(net, args.tile, args.tile_overlap, args.batch_size, args.device, not args.rm_without_lq)
    if rm_detect.needs_lq and args.hack_out and not args.hack_lq:
        raise UserInputError('this reward model is LQ-conditioned: give the hacked images\' LQ inputs (--hack-lq DIR) '
                             'or score it without them (--rm-without-lq)')
    detectors = build_detectors(rm_detect, args.window, args.lq_floors)
    max_size = args.max_size or None
    result = {'reward': {'opt': args.reward_opt, 'checkpoint': ckpt, 'stage': net.stage, 'has_map': net.has_map,
                         'given_lq': rm_detect.needs_lq},
              'settings': {'window': args.window, 'label_thr': args.label_thr, 'hack_error_thr': args.hack_error_thr,
                           'max_size': max_size, 'tile': args.tile, 'tile_overlap': args.tile_overlap,
                           'family_map': args.family_map, 'families': args.families, 'limit': args.limit},
              'detectors': list(detectors)}
    if args.fgr:
        samples = fgr_samples(args.fgr, parse_family_map(args.family_map), args.families, args.limit)
        fgr = evaluate_fgr(samples, detectors, args.label_thr, max_size)
        for group in list(fgr['families'].values()) + [fgr[POOLED]]:
            add_comparison(group, FGR_METRICS)
        fgr['rm_beats_trivial_on_every_family'] = {
            m: all(g['rm_beats_trivial'][m] for g in fgr['families'].values()) for m in FGR_METRICS}
        result['fgr'] = {'folders': list(args.fgr), **fgr}
    if args.hack_out:
        triplets = hack_triplets(args.hack_start, args.hack_out, args.hack_gt, args.hack_lq)
        hack = add_comparison(evaluate_hacking(triplets, detectors, args.hack_error_thr, max_size), HACK_METRICS)
        result['hacking'] = {'start': args.hack_start, 'hacked': args.hack_out, 'gt': args.hack_gt,
                             'lq': args.hack_lq, **hack}
    result = jsonable(result)
    print(format_report(result))
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'results in {args.out}')
    return result


def main(argv=None):
    """Entry point; bad input (options, checkpoint, folders) -> one line on stderr and exit code 2."""
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors
    args = parse_args(argv)

    def evaluate():
        run(args)
        return 0

    return exit_code_for_user_errors(evaluate)
