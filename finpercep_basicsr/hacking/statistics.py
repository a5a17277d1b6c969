"""What the seeds decide: 95 % t intervals on a mean over seeds or on a paired difference between set-ups, and a
seed-paired bootstrap interval on a difference of spreads.

A set-up's seeds share nothing but the seed, and two set-ups run with the same seed share their data order and
initial weights, so a difference between set-ups is taken seed by seed (paired) before its interval. A bound is
decided only when the whole interval lies on one side of it; one seed gives no interval, and so no decision.
"""
import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def t_interval(values, confidence=CONFIDENCE):
    """The two-sided t interval of the mean of ``values``.

    Args:
        values (list[float]): One value per seed.
        confidence (float): Coverage of the interval.

    Returns:
        dict | None: ``{'mean', 'lo', 'hi', 'n'}``; None for fewer than two values.
    """
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {'mean': mean, 'lo': mean - half, 'hi': mean + half, 'n': n}


def spread_difference_interval(a, b, confidence=CONFIDENCE, resamples=10000, seed=0):
    """Bootstrap interval of std(a) - std(b) (sample std over seeds), resampling the seeds jointly: ``a[i]`` and
    ``b[i]`` ran with the same seed, so a resample keeps each pair together.

    Returns:
        dict | None: ``{'mean'`` (the observed difference), ``'lo', 'hi', 'n'}``; None for fewer than three pairs
        (two seeds give one spread each, and no resample that varies).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) != len(b):
        raise ValueError(f'paired values: {len(a)} vs {len(b)}')
    n = len(a)
    if n < 3:
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    diffs = a[idx].std(axis=1, ddof=1) - b[idx].std(axis=1, ddof=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return {'mean': float(a.std(ddof=1) - b.std(ddof=1)), 'lo': float(lo), 'hi': float(hi), 'n': n}


def per_seed(runs, setup, column):
    """{seed: value of ``column``} of ``setup``'s runs (``runs``: [{'setup', 'seed', 'summary'}])."""
    return {r['seed']: r['summary'][column] for r in runs if r['setup'] == setup and column in r['summary']}


def paired_differences(runs, setup, other, column):
    """``setup`` minus ``other`` on ``column``, seed by seed, over the seeds both ran (sorted by seed)."""
    a, b = per_seed(runs, setup, column), per_seed(runs, other, column)
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def decide(interval, above=None, below=None):
    """Whether an interval shows its mean above ``above`` (or below ``below``).

    Returns:
        bool | None: True when the whole interval is on the claimed side of the bound, False when it is all on the
        other side, None (not resolved) when it spans the bound or there is no interval.
    """
    if interval is None:
        return None
    if above is not None:
        return True if interval['lo'] > above else False if interval['hi'] <= above else None
    return True if interval['hi'] < below else False if interval['lo'] >= below else None


def all_of(decisions):
    """A claim made of parts: True when every part holds, False when one is refuted, else None."""
    if any(d is False for d in decisions):
        return False
    return True if all(d is True for d in decisions) else None


def describe(name, interval, fmt='+.3f', values=None, kind='t'):
    """``name mean [lo, hi] (n seeds, ...)``; without an interval the one value there is and that it decides nothing."""
    if interval is None:
        n = len(values or [])
        shown = f' {values[0]:{fmt}}' if n == 1 else ''
        return f'{name}{shown} ({n} seed{"" if n == 1 else "s"}: no interval)'
    return (f'{name} {interval["mean"]:{fmt}} [{interval["lo"]:{fmt}}, {interval["hi"]:{fmt}}] '
            f'({interval["n"]} seeds, {CONFIDENCE:.0%} {kind} interval)')
