"""Mean +- std over seeds of the benchmark's measurements, and the paper's claims checked on them.

Per run (set-up, seed) the per-image rows are averaged; the run's ``own_reward`` is its set-up's
``reward/<setup>`` column, and the gains are relative to the start generator measured the same way:

- ``reward_gain`` = own reward - the start's reward under that set-up's reward;
- ``judge_gain`` = judge score - the start's judge score;
- ``psnr_change`` = PSNR - the start's PSNR;
- ``artifact_ratio`` = artifact index / the start's artifact index.

Per set-up every column is summarised as mean and std over its seeds (sample std, ddof 1; 0 for
one seed).
"""
import numpy as np

from finpercep_basicsr.metrics.directions import NEUTRAL

DERIVED = ('own_reward', 'reward_gain', 'judge_gain', 'psnr_change', 'artifact_ratio')
# the thresholds of the claims (issue text; the paper's protected run stays within 0.3 dB)
HACK_PSNR_DROP = 1.0
PROTECTED_PSNR_DROP = 0.3
PROTECTED_ARTIFACT_RATIO = 1.25


def mean_rows(rows):
    """Column means of {image: {column: value}}."""
    cols = list(next(iter(rows.values())))
    return {c: float(np.mean([r[c] for r in rows.values()])) for c in cols}


def run_summary(setup, run_mean, start_mean):
    """A run's means plus the derived columns (see the module docstring)."""
    out = dict(run_mean)
    own = run_mean.get(f'reward/{setup}')
    if own is not None:
        out['own_reward'] = own
        out['reward_gain'] = own - start_mean[f'reward/{setup}']
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


def check_claims(table, claims, curve_std=None):
    """The paper's claims on the aggregated table; returns [{'claim', 'holds' (None: not testable), 'evidence'}].

    Args:
        table (dict): ``aggregate`` output.
        claims (dict): {'hacked': setup, 'protected': setup, 'unstable': setup, 'score_only': setup} (any may
            be absent). ``score_only`` is the protected recipe with the map term off: the claim that the map
            itself protects (a lower artifact ratio, no lower PSNR).
        curve_std (dict | None): {setup: mean over iterations of the reward curves' std over seeds}.
    """
    out = []
    mean = lambda setup, col: table[setup][col]['mean'] if col in table.get(setup, {}) else float('nan')  # noqa: E731
    hacked = claims.get('hacked')
    if hacked in table:
        gain, dpsnr, art = mean(hacked, 'reward_gain'), mean(hacked, 'psnr_change'), mean(hacked, 'artifact_ratio')
        out.append({'claim': f'{hacked} hacks its reward: reward up, PSNR down >= {HACK_PSNR_DROP} dB, artifact '
                             f'index up',
                    'holds': bool(gain > 0 and dpsnr <= -HACK_PSNR_DROP and art > 1),
                    'evidence': f'reward gain {gain:+.3f}, PSNR {dpsnr:+.2f} dB, artifact ratio {art:.2f}'})
    protected = claims.get('protected')
    if protected in table:
        gain, judge = mean(protected, 'reward_gain'), mean(protected, 'judge_gain')
        dpsnr, art = mean(protected, 'psnr_change'), mean(protected, 'artifact_ratio')
        out.append({'claim': f'{protected} raises its reward and the judge\'s score, PSNR >= start - '
                             f'{PROTECTED_PSNR_DROP} dB, artifact index <= {PROTECTED_ARTIFACT_RATIO}x the start\'s',
                    'holds': bool(gain > 0 and judge > 0 and dpsnr >= -PROTECTED_PSNR_DROP
                                  and art <= PROTECTED_ARTIFACT_RATIO),
                    'evidence': f'reward gain {gain:+.3f}, judge gain {judge:+.3f}, PSNR {dpsnr:+.2f} dB, '
                                f'artifact ratio {art:.2f}'})
    score_only = claims.get('score_only')
    if score_only in table and protected in table:
        out.append(map_claim(table, protected, score_only))
    unstable = claims.get('unstable')
    if unstable in table and protected in table and curve_std:
        claim = f'without CCL ({unstable}) training is less stable than {protected}'
        seeds = min(next(iter(table[s].values()))['n'] for s in (unstable, protected))
        if seeds < 2:  # a spread over one seed is 0 by definition
            out.append({'claim': claim, 'holds': None, 'evidence': f'{seeds} seed: needs 2 or more'})
        else:
            a, b = curve_std.get(unstable, float('nan')), curve_std.get(protected, float('nan'))
            sa, sb = table[unstable]['psnr']['std'], table[protected]['psnr']['std']
            out.append({'claim': claim, 'holds': bool(a > b),
                        'evidence': f'reward-curve std over seeds {a:.4f} vs {b:.4f}; final PSNR std {sa:.3f} vs '
                                    f'{sb:.3f}'})
    return out


def map_claim(table, protected, score_only):
    """The map term protects: ``protected`` has a lower artifact ratio than ``score_only`` at no lower PSNR.

    Judged on the means; the evidence says when a difference is within the seeds' spread (the larger std).
    """
    cells, noise = [], []
    for col, fmt in (('artifact_ratio', '.2f'), ('psnr_change', '+.2f')):
        p, s = table[protected].get(col), table[score_only].get(col)
        if p is None or s is None:
            return {'claim': f'the map term protects ({protected} vs {score_only})', 'holds': None,
                    'evidence': f'no {col}'}
        cells.append(f'{col} {p["mean"]:{fmt}} ± {p["std"]:.2f} vs {s["mean"]:{fmt}} ± {s["std"]:.2f}')
        if min(p['n'], s['n']) > 1 and abs(p['mean'] - s['mean']) < max(p['std'], s['std']):
            noise.append(col)
    holds = (table[protected]['artifact_ratio']['mean'] < table[score_only]['artifact_ratio']['mean']
             and table[protected]['psnr_change']['mean'] >= table[score_only]['psnr_change']['mean'])
    evidence = '; '.join(cells) + (f' ({" and ".join(noise)}: within the seeds\' spread)' if noise else '')
    return {'claim': f'the map term protects beyond the score alone: {protected} has a lower artifact ratio '
                     f'than {score_only} at no lower PSNR', 'holds': bool(holds), 'evidence': evidence}


# no better direction: GT's detail = 1; rewards differ; how often the judge ranks GT above an output is a
# property of the judge (read on the start generator), not of the run
def markdown(table, columns, lower_better=()):
    """One row per set-up, ``mean ± std`` per column (arrow: the better direction, none when neither)."""
    arrow = lambda c: '' if c in NEUTRAL else ' ↓' if c in lower_better else ' ↑'  # noqa: E731
    head = '| set-up | ' + ' | '.join(f'{c}{arrow(c)}' for c in columns) + ' |'
    lines = [head, '|' + '---|' * (len(columns) + 1)]
    for setup, cols in table.items():
        cells = [f'{cols[c]["mean"]:.4f} ± {cols[c]["std"]:.4f}' if c in cols else '-' for c in columns]
        lines.append(f'| {setup} (n={next(iter(cols.values()))["n"]}) | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
