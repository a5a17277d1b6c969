"""``python scripts/demo.py [--quick | --full | --tiny | --tiny_train] --out DIR``: the FinPercep pipeline.

Default (--quick, --tiny): photos -> RLHF of Real-ESRGAN x4plus against the shipped FinPercep-RM six
ways (the naive global-only recipe, fidelity terms alone, the global score with the protected fidelity, FinPercep,
FinPercep + CCL, + co-evolution) with ``scripts/bench_hacking.py`` ->
held-out evaluation with the shipped judge -> report (``finpercep_basicsr.demo.shipped``).
--full (and --tiny_train): photos -> FGR sets (real SR models) -> reward model stages 0..3 -> RLHF
three ways -> evaluation on held-out photos -> report. Finished steps are skipped on a rerun;
training steps resume.
"""
import argparse
import json
import os
import sys
import time

from finpercep_basicsr.demo import pipeline, shipped
from finpercep_basicsr.evaluation import report
from finpercep_basicsr.utils.steps import StepFailed, run_steps
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import read_image

GRID_RUNS = ('realesrgan_x4plus', 'global_only', 'finpercep_ccl')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    for name in pipeline.PRESETS:
        size.add_argument(f'--{name}', dest='preset', action='store_const', const=name)
    parser.add_argument('--out', default='demo_out', help='output folder (rerun with the same folder to resume)')
    parser.add_argument('--rewrite-options', action='store_true',
                        help='regenerate the files in OUT/options (discards edits made there)')
    parser.add_argument('--grid-images', type=int, default=3, help='held-out images shown in the report')
    args = parser.parse_args(argv)
    args.preset = args.preset or 'quick'
    return args


def make_grids(out, files, num):
    """One PNG per held-out image: LR | start | global-only | FinPercep+CCL | GT, with PDM overlays."""
    from finpercep_basicsr.evaluation.sr_evaluation import load_reward
    cwd = os.getcwd()
    os.chdir(out)  # the reward options use paths relative to the demo folder, like every step
    try:
        net = load_reward(files['reward_eval']).net
    finally:
        os.chdir(cwd)
    grids = []
    for name in pipeline.heldout_names(out)[:num]:
        gt = read_image(os.path.join(out, 'datasets', 'test', 'gt', f'{name}.png'))
        lq = read_image(os.path.join(out, 'datasets', 'test', 'lq', f'{name}.png'))
        outputs = [read_image(os.path.join(out, 'eval', run, f'{name}.png')) for run in GRID_RUNS]
        h, w = outputs[0].shape[:2]
        images = [report.lr_preview(lq, h)[:h, :w]] + outputs + [gt[:h, :w]]
        titles = ['LR input', 'start', 'global-only', 'FinPercep+CCL', 'GT']
        columns = report.pdm_columns(titles, images, net)
        path = os.path.join(out, 'report_files', f'grid_{name}.png')
        report.image_grid(columns, path)
        grids.append(path)
    return grids


def findings(evaluation, curves):
    """Plain sentences of what the evaluation says (computed, not written in advance)."""
    runs = evaluation['runs']
    lines = report.compare(runs, 'finpercep_ccl', 'global_only')
    base = runs['realesrgan_x4plus']['mean']
    for run in ('global_only', 'finpercep', 'finpercep_ccl'):
        mean = runs[run]['mean']
        worse = [c for c in mean if c in base and report.better_than(c, mean[c], base[c]) < 0]
        lines.append(f'{run} vs the starting model: worse on {", ".join(worse) or "nothing"}; '
                     f'RM score {base.get("rm_score", float("nan")):.4f} -> {mean.get("rm_score", float("nan")):.4f}')
    lines.append('RM score and PDM artifact rate come from the final-stage reward model, the same family the '
                 'FinPercep runs optimise: read them together with the full-reference metrics, which are independent.')
    lines.append('Each run\'s reward curve is measured by its own reward (stage-0 score for global-only), so the '
                 'curves show each optimisation, not a common scale; PSNR/SSIM curves are on held-out photos.')
    if curves:
        lines.append(f'Curves plotted: {", ".join(curves)}.')
    return lines


def main(argv=None):
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    timings_path = os.path.join(out, 'timings.json')
    start = time.time()
    print(f'FinPercep demo ({args.preset}) in {out}', file=sys.stderr)
    on_shipped_rm = pipeline.PRESETS[args.preset]['rm'] == 'shipped'
    try:
        run_steps([pipeline.photo_step(args.preset)], out, timings_path)
        if not os.path.isfile(os.path.join(out, 'datasets', 'split.json')):
            pipeline.split_photos(out, pipeline.PRESETS[args.preset])
        elif on_shipped_rm:
            pipeline.check_shipped_split(out)
        if on_shipped_rm:
            files = shipped.write_options(out, pipeline.REPO, pipeline.PRESETS[args.preset], args.rewrite_options)
            steps = shipped.build_steps(files)
        else:
            files = pipeline.write_options(out, args.preset, rewrite=args.rewrite_options)
            steps = pipeline.build_steps(out, args.preset, files)
        pipeline.write_commands(out, [pipeline.photo_step(args.preset)] + steps)
        timings = run_steps(steps, out, timings_path)
    except StepFailed as err:
        print(f'\nerror: {err}\nFix the cause and rerun the same command: finished steps are skipped.',
              file=sys.stderr)
        return 1
    except UserInputError as err:
        print(f'\nerror: {err}', file=sys.stderr)
        return 2
    try:
        if on_shipped_rm:
            write_shipped_report(out, args, timings)
        else:
            write_demo_report(out, args, files, timings)
    except UserInputError as err:
        print(f'\nerror while writing the report: {err}', file=sys.stderr)
        return 1
    print(f'\nreport: {os.path.join(out, "report.html")} ({time.time() - start:.0f} s this run)', file=sys.stderr)
    with open(os.path.join(out, 'eval', 'results.md')) as f:
        print(f.read())
    return 0


def write_shipped_report(out, args, timings):
    """The report of the default chain from the bench's results.json, plots and judge grids."""
    with open(os.path.join(out, 'eval', 'results.json')) as f:
        results = json.load(f)
    preset = pipeline.PRESETS[args.preset]
    curves = [os.path.join(out, 'eval', p) for p in results['files'].values()]
    grids = [os.path.join(out, 'eval', g) for g in results['grids']]
    intro = [f'Preset --{args.preset}: Real-ESRGAN x4plus (converted from its packaged ncnn weights) fine-tuned '
             f'with RLHF (ReFL, {preset["rlhf_iters"]} iterations) against the shipped FinPercep-RM '
             f'(weights/finpercep_rm.pth, docs/finpercep_rm.md) in {len(results["setups"])} set-ups: '
             f'{", ".join(results["setups"])}. '
             f'Held-out photos ({", ".join(pipeline.heldout_names(out))}) were seen by neither the reward model '
             f'nor the generator; the judge (weights/finpercep_rm_judge.pth) was trained on other photos and '
             f'other SR families. --full retrains the reward model from FGR data instead.',
             'Every step is a command in commands.sh using the option files in options/; rerun scripts/demo.py '
             'with the same --out to resume.']
    titles = ', '.join(['LR input', 'start'] + results['grid_setups'] + ['GT'])
    report.write_report(out, 'FinPercep-RM demo report', intro, shipped.bench_table(results), curves, grids,
                        timings, shipped.findings(results),
                        grid_note=f'columns: {titles}; '
                                  'bottom: the judge\'s PDM overlay (red = degraded)')


def write_demo_report(out, args, files, timings):
    """Curves, image grids and the report files from the finished steps' outputs."""
    os.makedirs(os.path.join(out, 'report_files'), exist_ok=True)
    with open(os.path.join(out, 'eval', 'results.json')) as f:
        evaluation = json.load(f)
    tb = {label: report.tb_scalars(os.path.join(out, 'tb_logger',
                                                pipeline.experiment_name(out, files[f'rlhf_{label}'])))
          for label in pipeline.RLHF_RUNS}
    curves_path = os.path.join(out, 'report_files', 'curves.png')
    curves = report.curves_png(tb, curves_path)
    grids = make_grids(out, files, args.grid_images)
    preset = pipeline.PRESETS[args.preset]
    sr_names = ', '.join(src['name'] for src in pipeline.SR_SOURCES[preset['sr']])
    intro = [f'Preset --{args.preset}: real photos ({", ".join(preset["sources"])}), FGR data from SR sources '
             f'({sr_names}), FinPercep-RM stages 0-3 on an ImageNet EfficientNet-Lite0 encoder, and RLHF (ReFL) of '
             f'Real-ESRGAN x4plus converted from its packaged ncnn weights, three ways. Held-out photos '
             f'({", ".join(pipeline.heldout_names(out))}) were used by neither the reward model nor the generator.',
             'Every step is a command in commands.sh using the option files in options/; rerun scripts/demo.py '
             'with the same --out to resume.']
    table = report.eval_table(os.path.join(out, 'eval', 'results.json'))
    report.write_report(out, 'FinPercep-RM demo report', intro, table, [curves_path] if curves else [], grids, timings,
                        findings(evaluation, curves))
