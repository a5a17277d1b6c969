"""The hacking benchmark end to end: train every (set-up, seed), measure on held-out photos, aggregate, plot.

Layout of ``--out``::

    options/<setup>_s<seed>.yml    the derived RLHF option files (edit one and rerun to change a run)
    logs/<setup>_s<seed>.log       each training's output
    measure/<run>.json             per-image measurements (cached: a rerun skips measured runs; measure/inputs.json
                                   holds the checkpoints' sha256, and a changed checkpoint empties the cache)
    images/<run>/                  held-out outputs of the start and of each set-up's first seed
    results.json, results.md       per run, per set-up mean +- std, the claims checked
    reward_curves.png, gain_vs_psnr.png, grid_<image>.png

Runs execute in the current folder (``experiments/``, ``tb_logger/``), like any BasicSR training.
"""
import json
import os
import sys
import threading

import numpy as np

from finpercep_basicsr.evaluation.report import claim_verdict
from finpercep_basicsr.hacking import aggregate, plan, plots
from finpercep_basicsr.hacking.claims import check_claims, judge_is_fit
from finpercep_basicsr.hacking.measure import HackingScorers, final_reward_options, measure_generator
from finpercep_basicsr.metrics.directions import JUDGE_COLUMNS, lower_is_better
from finpercep_basicsr.utils.steps import StepFailed, run_steps
from finpercep_basicsr.utils.checkpoint import atomic_write_json
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.option_check import load_option_file

START = 'start'
SPLIT_NOTES = {'dev': 'the crops values were chosen on', 'test': 'photos never used to choose a value, reported once '
               'per release'}


def threads_per_job(jobs, environ=os.environ):
    """cores / jobs, capped by an OMP_NUM_THREADS the caller set (e.g. two benches side by side)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    cap = environ.get('OMP_NUM_THREADS', '')
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


def train_all(runs, out, jobs=1):
    """Train the runs, ``jobs`` at a time (each with ``threads_per_job`` threads); returns {step: seconds}."""
    plan.check_experiments_match(runs)
    threads = threads_per_job(jobs)
    steps = plan.training_steps(runs, threads)
    logs = os.path.join(out, 'logs')
    if jobs <= 1:
        return run_steps(steps, '.', os.path.join(out, 'timings.json'), logs_dir=logs)
    lanes = [steps[i::jobs] for i in range(jobs)]
    timings, errors = {}, []

    def lane(lane_steps):
        try:
            timings.update(run_steps(lane_steps, '.', echo=False, logs_dir=logs))
        except StepFailed as err:
            errors.append(err)

    workers = [threading.Thread(target=lane, args=(s,)) for s in lanes if s]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    # as run_steps does with one lane: a rerun adds its time to the earlier runs' (skipped steps add 0)
    path = os.path.join(out, 'timings.json')
    if os.path.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
        timings = {name: earlier.get(name, 0.0) + seconds for name, seconds in timings.items()}
    atomic_write_json(path, timings, indent=1)
    return timings


def load_judge(judge_opt, device='cpu'):
    """The judge's network from its RM option file (None when the bench has no judge)."""
    from finpercep_basicsr.evaluation.score import load_reward_net
    if not judge_opt:
        return None
    try:
        return load_reward_net(opt=judge_opt, device=device)[0]
    except FileNotFoundError as err:  # the checkpoint path is relative to the folder the bench runs in
        raise UserInputError(f'evaluation.judge {judge_opt}: {err} (run from the folder its paths are relative '
                             f'to, e.g. the repository root)') from err


def drop_stale_measurements(folder, inputs):
    """Empty the measurement cache when a checkpoint it was measured with (generator, reward, judge) changed.

    The cache is keyed by run name only; ``<folder>/inputs.json`` records the checkpoints' sha256.
    """
    record = os.path.join(folder, 'inputs.json')
    files = os.listdir(folder) if os.path.isdir(folder) else []
    cached = [f for f in files if f.endswith('.json') and f != 'inputs.json']
    previous = None
    if os.path.isfile(record):
        with open(record) as f:
            previous = json.load(f)
    if cached and previous != inputs:
        print(f'{folder}: checkpoints changed since the cached measurements, measuring again', file=sys.stderr)
        for name in cached:
            os.remove(os.path.join(folder, name))
    os.makedirs(folder, exist_ok=True)
    atomic_write_json(record, inputs, indent=1)


def measure_all(opt, runs, out):
    """Per-run summaries [{'setup', 'seed', 'run', 'summary'}], the start's means, notes, pairs, column
    directions, and the judge network (reused for the grids)."""
    from finpercep_basicsr.evaluation.sr_evaluation import build_metrics, pair_folders

    ev = opt['evaluation']
    pairs = pair_folders(ev['lq'], ev['gt'])[:ev['max_images'] or None]
    metrics, notes = build_metrics(ev['metrics'])
    rewards = {setup: final_reward_options(path) for setup, seed, path in runs if seed == opt['seeds'][0]}
    first_path = runs[0][2]
    scorers = HackingScorers(rewards, load_judge(ev.get('judge')), ev['no_reference'], ev['pdm_threshold'],
                             scale=int(load_option_file(first_path).get('scale', 4)))
    start_rows = measure_generator(first_path, pairs, metrics, scorers, save_dir=os.path.join(out, 'images', START),
                                   desc=START, cache=os.path.join(out, 'measure', f'{START}.json'))
    start_mean = aggregate.mean_rows(start_rows)
    results = []
    for setup, seed, path in runs:
        name = f'{setup}_s{seed}'
        folder = plan.experiment_dir(path)
        save = os.path.join(out, 'images', setup) if seed == opt['seeds'][0] else None
        rows = measure_generator(folder, pairs, metrics, scorers, ev['param_key'], save_dir=save, desc=name,
                                 cache=os.path.join(out, 'measure', f'{name}.json'),
                                 required=set(metrics) | scorers.columns([setup]))
        mean = aggregate.mean_rows(rows)
        results.append({'setup': setup, 'seed': seed, 'run': name, 'mean': mean,
                        'summary': aggregate.run_summary(setup, mean, start_mean,
                                                         rewards[setup].get('reference_margin'))})
    directions = {c: lower_is_better(c, metrics) for c in start_mean}
    return results, start_mean, notes, pairs, directions, scorers.judge


def judge_check_note(prefers_gt, images):
    """The judge's sanity check in words: how often it ranks GT above the start generator's output."""
    verdict = ('it ranks GT above this generator\'s output more often than not' if prefers_gt > 0.5 else
               'it prefers this generator\'s output to GT as often as not or more, so its score gains cannot be '
               'read as moving toward GT')
    return (f'judge check: it scores GT above the start generator\'s output on {round(prefers_gt * images)} of '
            f'{images} held-out images; {verdict}')


def training_scalars(runs):
    """{(setup, seed): {tag: (steps, values)}} of every run's training scalars, from TensorBoard."""
    from finpercep_basicsr.evaluation.report import tb_scalars
    return {(setup, seed): tb_scalars(os.path.join('tb_logger', os.path.basename(plan.experiment_dir(path))))
            for setup, seed, path in runs}


def reward_curves(scalars):
    """{setup: [(steps, values) per seed]} of the training tag ``reward``."""
    curves = {}
    for (setup, _), tags in scalars.items():
        if 'reward' in tags:
            curves.setdefault(setup, []).append(tags['reward'])
    return curves


def add_capped_share(results, scalars):
    """Each run's ``capped_share``: the share of training images its reward ceiling capped, averaged over the
    logged steps (the ``capped`` tag; runs without a ceiling log none and get no column)."""
    for run in results:
        tags = scalars.get((run['setup'], run['seed']), {})
        if 'capped' in tags:
            run['summary']['capped_share'] = float(np.mean(tags['capped'][1]))


def columns_of(table, evaluation):
    """The table's columns: metrics, no-reference, judge, artifact index, then the derived ones."""
    first = evaluation['metrics'] + ([evaluation['no_reference']] if evaluation['no_reference'] else [])
    order = list(first) + ['detail_error', 'judge_score', 'judge_pdm_rate', 'artifact_index'] + list(
        aggregate.DERIVED) + ['capped_share']
    present = set.union(*(set(cols) for cols in table.values()))
    return [c for c in order if c in present]


def run_bench(opt_path, out, seeds=None, setups=None, jobs=1, rewrite=False, grid_images=3):
    """Everything above; returns the results dict (also written to ``out/results.json``)."""
    opt = plan.load_bench_options(opt_path, seeds, setups)
    os.makedirs(out, exist_ok=True)
    runs = plan.write_run_options(opt, out, rewrite)
    inputs = plan.stamp_checkpoints(runs)
    if opt['evaluation'].get('judge'):
        inputs.update(plan.checkpoint_fingerprint(load_option_file(opt['evaluation']['judge'])))
    drop_stale_measurements(os.path.join(out, 'measure'), inputs)
    timings = train_all(runs, out, jobs)
    results, start_mean, notes, pairs, directions, judge = measure_all(opt, runs, out)
    if 'judge_prefers_gt' in start_mean:
        notes = notes + [judge_check_note(start_mean['judge_prefers_gt'], len(pairs))]
    scalars = training_scalars(runs)
    add_capped_share(results, scalars)
    table = aggregate.aggregate(results)
    curves = reward_curves(scalars)
    stds = plots.curve_std(curves)
    judge_fit = judge_is_fit(start_mean)
    claims = check_claims(results, table, opt['claims'], stds, judge_fit)
    files = {}
    if curves:
        files['reward_curves'] = os.path.join(out, 'reward_curves.png')
        plots.reward_curves_png(curves, files['reward_curves'])
    files['gain_vs_psnr'] = os.path.join(out, 'gain_vs_psnr.png')
    plots.gain_vs_psnr_png(results, files['gain_vs_psnr'])
    grid_setups = [s for s in (opt['claims'].get('hacked'), opt['claims'].get('protected')) if s in opt['setups']]
    grids = image_grids(out, pairs, grid_setups, grid_images, judge)
    columns = columns_of(table, opt['evaluation'])
    lower = [c for c in columns if directions.get(c, c == 'judge_pdm_rate')]
    split = opt['evaluation']['split']
    summary = {'bench': opt['name'], 'split': split, 'chosen_on_dev': opt['chosen_on_dev'], 'seeds': opt['seeds'],
               'images': len(pairs), 'start': start_mean,
               'setups': table, 'runs': results, 'claims': claims, 'judge_fit': judge_fit, 'reward_curve_std': stds,
               'notes': notes,
               'files': {k: os.path.relpath(v, out) for k, v in files.items()},
               'grids': [os.path.relpath(g, out) for g in grids], 'grid_setups': grid_setups, 'timings': timings}
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=float)
    md = [f'# Hacking benchmark {opt["name"]}: {len(opt["seeds"])} seed(s), {len(pairs)} held-out images '
          f'({split} split: {SPLIT_NOTES[split]})', '',
          aggregate.markdown(table, columns, lower, JUDGE_COLUMNS if judge_fit is False else ()), '',
          'start: ' + ', '.join(
              f'{c} {v:.4f}' for c, v in start_mean.items()), '', '## Claims', '']
    md += [f'- {claim_verdict(c)}: {c["claim"]} ({c["evidence"]})' for c in claims]
    md += [f'- {n}' for n in notes]
    if opt['chosen_on_dev']:
        md += ['', '## Values chosen on the dev split', '']
        md += [f'- `{key}`: {how}' for key, how in opt['chosen_on_dev'].items()]
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(md) + '\n')
    return summary


def image_grids(out, pairs, setups, num, judge=None):
    """LR | start | each listed set-up | GT, each with the judge's PDM overlay below (red = degraded)."""
    from finpercep_basicsr.evaluation.report import image_grid, lr_preview, pdm_columns
    from finpercep_basicsr.utils.image_io import read_image

    grids = []
    spread = pairs[::max(1, len(pairs) // max(num, 1))][:num]  # crops of different photos, not one photo's
    for name, lq_path, gt_path in spread:
        outputs = [read_image(os.path.join(out, 'images', run, f'{name}.png')) for run in [START] + setups]
        h, w = outputs[0].shape[:2]
        images = [lr_preview(read_image(lq_path), h)[:h, :w]] + outputs + [read_image(gt_path)[:h, :w]]
        path = os.path.join(out, f'grid_{name}.png')
        image_grid(pdm_columns(['LR input', START] + setups + ['GT'], images, judge), path)
        grids.append(path)
    return grids


def main(args):
    try:
        summary = run_bench(args.opt, args.out, args.seeds, args.setups, args.jobs, args.rewrite_options,
                            args.grid_images)
    except StepFailed as err:
        print(f'error: {err}\nFix the cause and rerun the same command: finished runs are skipped.', file=sys.stderr)
        return 1
    except UserInputError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    with open(os.path.join(args.out, 'results.md')) as f:
        print(f.read())
    failed = [c['claim'] for c in summary['claims'] if c['holds'] is False]
    if failed:  # a finding, not an error: the benchmark ran
        print(f'{len(failed)} of {len(summary["claims"])} claims do not hold on these runs', file=sys.stderr)
    return 0
