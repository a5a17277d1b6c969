"""Mean +- std over seeds of the benchmark's measurements (the claims decided on them: ``hacking.claims``).

Per run (set-up, seed) the per-image rows are averaged; the run's ``own_reward`` is its set-up's
``reward/<setup>`` column, and the gains are relative to the start generator measured the same way:

- ``reward_gain`` = own reward - the start's reward under that set-up's reward;
- ``judge_gain`` = judge score - the start's judge score;
- ``psnr_change`` = PSNR - the start's PSNR;
- ``artifact_ratio`` = artifact index / the start's artifact index;
- ``gain_of_margin`` = reward gain / the set-up's ceiling margin (``reference_margin``; set-ups with a ceiling only):
  the share of the headroom its ceiling allowed that the run took on held-out images. The margin is in the units
  of each set-up's own reward (``S + lambda (1 - max M)`` or ``S`` alone), so this share, not the raw gain, is
  what compares across set-ups.

Per set-up every column is summarised as mean and std over its seeds (sample std, ddof 1; 0 for
one seed).
"""
import numpy as np

from finpercep_basicsr.metrics.directions import NEUTRAL

DERIVED = ('own_reward', 'reward_gain', 'gain_of_margin', 'judge_gain', 'psnr_change', 'artifact_ratio')


def mean_rows(rows):
    """Column means of {image: {column: value}}."""
    cols = list(next(iter(rows.values())))
    return {c: float(np.mean([r[c] for r in rows.values()])) for c in cols}


def run_summary(setup, run_mean, start_mean, margin=None):
    """A run's means plus the derived columns (see the module docstring); ``margin``: its ceiling's, if any."""
    out = dict(run_mean)
    own = run_mean.get(f'reward/{setup}')
    if own is not None:
        out['own_reward'] = own
        out['reward_gain'] = own - start_mean[f'reward/{setup}']
        if margin:
            out['gain_of_margin'] = out['reward_gain'] / margin
    if 'judge_score' in run_mean:
        out['judge_gain'] = run_mean['judge_score'] - start_mean['judge_score']
    if 'psnr' in run_mean:
        out['psnr_change'] = run_mean['psnr'] - start_mean['psnr']
    if 'artifact_index' in run_mean:
        out['artifact_ratio'] = run_mean['artifact_index'] / max(start_mean['artifact_index'], 1e-12)
    return out


def mean_std(values):
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {'mean': float(values.mean()), 'std': std, 'n': int(len(values))}


def aggregate(runs):
    """{setup: {column: {mean, std, n}}} from ``runs`` = [{'setup', 'seed', 'summary': {column: value}}]."""
    by_setup = {}
    for run in runs:
        by_setup.setdefault(run['setup'], []).append(run['summary'])
    table = {}
    for setup, summaries in by_setup.items():
        cols = [c for c in summaries[0] if all(c in s for s in summaries)]
        table[setup] = {c: mean_std([s[c] for s in summaries]) for c in cols}
    return table


# no better direction: GT's detail = 1; rewards differ; how often the judge ranks GT above an output is a
# property of the judge (read on the start generator), not of the run
def markdown(table, columns, lower_better=(), unfit=()):
    """One row per set-up, ``mean ± std`` per column (arrow: the better direction, none when neither); the columns
    of ``unfit`` (a referee that failed its own check) read 'unfit' instead of numbers."""
    arrow = lambda c: '' if c in NEUTRAL else ' ↓' if c in lower_better else ' ↑'  # noqa: E731
    head = '| set-up | ' + ' | '.join(f'{c}{arrow(c)}' for c in columns) + ' |'
    lines = [head, '|' + '---|' * (len(columns) + 1)]
    for setup, cols in table.items():
        cells = ['unfit' if c in unfit and c in cols else f'{cols[c]["mean"]:.4f} ± {cols[c]["std"]:.4f}'
                 if c in cols else '-' for c in columns]
        lines.append(f'| {setup} (n={next(iter(cols.values()))["n"]}) | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
