"""The demo's default chain: RLHF of Real-ESRGAN x4plus against the SHIPPED FinPercep-RM, judged by the shipped judge.

photos -> held-out split (the shipped RM's held-out photos) -> packaged ncnn x4plus converted to BasicSR
-> ``scripts/bench_hacking.py`` on ``options/bench/hacking_realesrgan.yml`` scaled to the preset (every
set-up, one seed) -> report. Every option file is written into OUT/options with absolute paths to the
repository's weights, so the demo folder can live anywhere.
"""
import os
import sys

import yaml

from finpercep_basicsr.utils.steps import Step
from finpercep_basicsr.utils.options_io import derive_options

BENCH = os.path.join('options', 'bench', 'hacking_realesrgan.yml')
JUDGE = os.path.join('options', 'pretrained', 'finpercep_rm_judge.yml')


def ccl_stages(n, template):
    """The bench's CCL stages moved to a run of ``n`` iterations: starts at 0, n/4, n/2, ramps n/8."""
    ramp = max(1, n // 8)
    starts = [0, max(1, n // 4)]
    starts.append(max(n // 2, starts[1] + ramp))
    return [dict(stage, start_iter=start, **({'ramp_iters': ramp} if i else {}))
            for i, (stage, start) in enumerate(zip(template, starts))]


def write_options(out, repo, preset, rewrite=False):
    """OUT/options/{bench,judge}.yml from the repository's bench and judge files; returns their paths."""
    files = {'bench': os.path.join('options', 'bench.yml'), 'judge': os.path.join('options', 'judge.yml')}
    if not rewrite and all(os.path.isfile(os.path.join(out, f)) for f in files.values()):
        return files
    with open(os.path.join(repo, JUDGE)) as f:
        judge = yaml.safe_load(f)
    judge['path']['pretrain_network_reward'] = os.path.join(repo, judge['path']['pretrain_network_reward'])
    derive_options(judge, os.path.join(out, files['judge']), {}, f'Written by scripts/demo.py from {JUDGE}.')
    with open(os.path.join(repo, BENCH)) as f:
        bench = yaml.safe_load(f)
    n = preset['rlhf_iters']
    common = bench['common']
    common['train.reward_opt']['pretrain_path'] = os.path.join(repo, common['train.reward_opt']['pretrain_path'])
    resized = {'train.total_iter': n, 'datasets.train.gt_size': preset['rlhf_patch'],
               'datasets.val.gt_size': preset['rlhf_patch'], 'datasets.train.batch_size_per_gpu': preset['rlhf_batch'],
               'logger.print_freq': max(1, n // 16), 'logger.save_checkpoint_freq': max(1, n // 2),
               'logger.keep_checkpoints': 1}
    common.update(resized)
    # what the preset sets was not chosen on the dev split: the results list only the values the demo keeps
    bench['chosen_on_dev'] = {k: v for k, v in (bench.get('chosen_on_dev') or {}).items() if k not in resized}
    for spec in bench['setups'].values():
        spec['opt'] = os.path.join(repo, spec['opt'])
        stages = (spec.get('overrides') or {}).get('train.ccl.stages')
        if stages:
            spec['overrides']['train.ccl.stages'] = ccl_stages(n, stages)
    bench['seeds'] = [0]
    bench['evaluation'].update(lq='datasets/test/lq', gt='datasets/test/gt', judge=files['judge'])
    derive_options(bench, os.path.join(out, files['bench']), {},
                   f'Written by scripts/demo.py from {BENCH}: {n} iterations, one seed; run from the demo folder.')
    return files


def build_steps(files):
    """convert + bench: the commands a user would type in the demo folder."""
    repo_script = lambda name: os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(  # noqa: E731
        os.path.abspath(__file__)))), 'scripts', name)
    return [
        Step('convert', [sys.executable, repo_script('convert_ncnn_to_basicsr.py'), '--out',
                         'weights/RealESRGAN_x4plus.pth'],
             ['weights/RealESRGAN_x4plus.pth'], 'packaged ncnn Real-ESRGAN x4plus -> BasicSR RRDBNet checkpoint'),
        Step('bench', [sys.executable, repo_script('bench_hacking.py'), '-opt', files['bench'], '--out', 'eval',
                       '--jobs', '2'],
             ['eval/results.json'],
             'the RLHF set-ups of the bench against the shipped FinPercep-RM, judged on held-out photos'),
    ]


def bench_table(results):
    """The report table of a bench results.json: one row per set-up and the start, means."""
    from finpercep_basicsr.evaluation.report import fmt_value
    from finpercep_basicsr.metrics.directions import JUDGE_COLUMNS, NEUTRAL, lower_is_better
    cols = [c for c in ('psnr', 'ssim', 'fsim', 'gmsd', 'piqe', 'judge_score', 'judge_pdm_rate', 'artifact_index',
                        'color_shift', 'own_reward', 'reward_gain') if c in next(iter(results['setups'].values()))]
    lower = {c for c in cols if lower_is_better(c)}
    header = ['run'] + [c if c in NEUTRAL else f'{c} {"↓" if c in lower else "↑"}' for c in cols]
    # a judge that failed its own check on the start generator is reported as unfit, not with its numbers
    unfit = set(JUDGE_COLUMNS) if results.get('judge_fit') is False else set()
    cell = lambda values, c: 'unfit' if c in unfit else fmt_value(values[c]) if c in values else '-'  # noqa: E731
    rows = [['start'] + [cell(results['start'], c) for c in cols]]
    rows += [[setup] + [cell({k: v['mean'] for k, v in table.items()}, c) for c in cols]
             for setup, table in results['setups'].items()]
    best = {}
    for i, c in enumerate(cols, 1):
        if c in NEUTRAL or c in unfit or c == 'reward_gain':
            continue  # no better direction / no common scale: each set-up's gain is under its own reward
        values = {r: results['setups'][r][c]['mean'] for r in results['setups']}
        best[i] = (min if c in lower else max)(values, key=values.get)
    notes = ['own_reward: each set-up\'s own reward on the held-out images (set-ups optimise different rewards, '
             'so compare reward_gain, the change from the start generator under the same reward).',
             'judge: a reward model sharing neither photos nor SR families with the optimised one; judge_pdm_rate = '
             'fraction of pixels of its map above 0.5.',
             'artifact_index: mean local Laplacian energy of the output over that of GT (GT = 1); color_shift: RMS '
             'difference of the output\'s and GT\'s mean colour per channel (a cast costs PSNR without texture).']
    return {'title': f'Held-out metrics ({results["images"]} images, seeds {results["seeds"]})', 'header': header,
            'rows': rows, 'best': best, 'notes': notes + list(results.get('notes', []))}


def findings(results):
    """Plain sentences from the numbers: the claims checked, then each set-up against the start."""
    from finpercep_basicsr.evaluation.report import claim_verdict
    seeds = len(results['seeds'])
    lines = [f'One draw ({seeds} seed): the numbers below decide no claim, and none is made; '
             f'scripts/bench_hacking.py decides them over its seeds with paired 95 % intervals.'] if seeds < 2 else []
    lines += [f'{claim_verdict(c).capitalize()}: {c["claim"]} ({c["evidence"]}).' for c in results['claims']]
    # whether the judge's gains mean anything on this generator belongs next to the claims that use them
    lines += [f'{n[0].upper()}{n[1:]}.' for n in results.get('notes', []) if n.startswith('judge check')]
    for setup, table in results['setups'].items():
        mean = {c: table[c]['mean'] if c in table else float('nan')
                for c in ('reward_gain', 'judge_gain', 'psnr_change', 'artifact_ratio', 'color_shift')}
        lines.append(f'{setup}: own reward {mean["reward_gain"]:+.3f} vs the start, judge score '
                     f'{mean["judge_gain"]:+.3f}, PSNR {mean["psnr_change"]:+.2f} dB, artifact index '
                     f'{mean["artifact_ratio"]:.2f}x the start\'s, colour shift {mean["color_shift"]:.3f} '
                     f'(start {results["start"].get("color_shift", float("nan")):.3f}).')
    return lines
