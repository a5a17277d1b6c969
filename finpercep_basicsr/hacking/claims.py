"""The paper's claims, decided over seeds (``hacking.statistics``): each holds, does not hold, or is not resolved.

- hacked: the naive set-up raises its own reward, loses at least ``HACK_PSNR_DROP`` dB and raises the artifact
  index (each a t interval over its seeds' changes from the start generator);
- protected: the protected set-up raises its reward and the judge's score (while the judge passes its own check,
  ``judge_is_fit``), loses at most ``PROTECTED_PSNR_DROP`` dB and keeps the artifact index within
  ``PROTECTED_ARTIFACT_RATIO`` x the start's;
- map: the protected set-up against its score-only ablation, seed by seed: a lower artifact ratio (the paired
  difference's interval below 0) at a PSNR not shown lower (the PSNR difference's interval is not all below 0);
- factors: for each factor switched alone (``{with: SETUP, without: SETUP}``), whether it protects: without it the
  artifact ratio is shown higher or the PSNR shown lower, seed by seed, and neither is shown better; it does not
  hold when switching it off is shown better and nowhere worse;
- unstable: the set-up without CCL ends training more spread over seeds than the protected one: the difference of
  the two set-ups' std of the PSNR change, with a bootstrap interval that resamples the shared seeds together (it
  needs three seeds); the reward curves' spread is printed beside it.

A claim holds when every part's interval lies on its side of the bound, does not hold when one part's lies on the
other side, and is not resolved otherwise: one seed never decides a claim.
"""
from finpercep_basicsr.hacking.statistics import (all_of, decide, describe, paired_differences, per_seed,
                                                  spread_difference_interval, t_interval)

# the thresholds of the claims (issue text; the paper's protected run stays within 0.3 dB)
HACK_PSNR_DROP = 1.0
PROTECTED_PSNR_DROP = 0.3
PROTECTED_ARTIFACT_RATIO = 1.25
# a judge counts only while it ranks GT above the start generator's output on this share of the held-out images
JUDGE_FIT_RATE = 0.9


def judge_is_fit(start_mean):
    """Whether the judge passed its own check on the start generator (``judge_prefers_gt`` >= ``JUDGE_FIT_RATE``);
    None without a judge."""
    rate = start_mean.get('judge_prefers_gt')
    return None if rate is None else bool(rate >= JUDGE_FIT_RATE)


def _parts(runs, setup, bounds):
    """Decisions and evidence of ``setup``'s per-seed columns against ``bounds`` [(column, side, bound, fmt)]."""
    decisions, evidence = [], []
    for column, side, bound, fmt in bounds:
        values = list(per_seed(runs, setup, column).values())
        interval = t_interval(values)
        decisions.append(decide(interval, **{side: bound}))
        evidence.append(describe(column, interval, fmt, values))
    return all_of(decisions), '; '.join(evidence)


def hacked_claim(runs, setup):
    holds, evidence = _parts(runs, setup, [('reward_gain', 'above', 0.0, '+.3f'),
                                           ('psnr_change', 'below', -HACK_PSNR_DROP, '+.2f'),
                                           ('artifact_ratio', 'above', 1.0, '.2f')])
    return {'claim': f'{setup} hacks its reward: reward up, PSNR down >= {HACK_PSNR_DROP} dB, artifact index up',
            'holds': holds, 'evidence': evidence}


def protected_claim(runs, setup, judge_fit=True):
    """The protected set-up's claim; the judge's gain is a part of it only while the judge is fit."""
    judge = [('judge_gain', 'above', 0.0, '+.3f')] if judge_fit else []
    holds, evidence = _parts(runs, setup, [('reward_gain', 'above', 0.0, '+.3f')] + judge + [
        ('psnr_change', 'above', -PROTECTED_PSNR_DROP, '+.2f'),
        ('artifact_ratio', 'below', PROTECTED_ARTIFACT_RATIO, '.2f')])
    judged = ' and the judge\'s score' if judge_fit else ''
    unfit = '' if judge_fit else '; the judge is unfit (its own check), so its score is no part of the claim'
    return {'claim': f'{setup} raises its reward{judged}, PSNR >= start - {PROTECTED_PSNR_DROP} dB, '
                     f'artifact index <= {PROTECTED_ARTIFACT_RATIO}x the start\'s',
            'holds': holds, 'evidence': evidence + unfit}


def _paired(runs, setup, other):
    """Intervals of ``setup`` - ``other`` on the artifact ratio and the PSNR change, seed by seed, and the evidence
    line; None when the two share no seed with both columns."""
    artifacts = paired_differences(runs, setup, other, 'artifact_ratio')
    psnr = paired_differences(runs, setup, other, 'psnr_change')
    if not artifacts or not psnr:
        return None
    artifact_interval, psnr_interval = t_interval(artifacts), t_interval(psnr)
    evidence = (f'paired differences {setup} - {other}: '
                f'{describe("artifact_ratio", artifact_interval, "+.3f", artifacts)}; '
                f'{describe("psnr_change", psnr_interval, "+.3f", psnr)}')
    return artifact_interval, psnr_interval, evidence


NO_SHARED_SEED = 'no seed that both set-ups ran with the columns'


def map_claim(runs, protected, score_only):
    """The map term protects: ``protected`` minus ``score_only``, seed by seed (see the module docstring)."""
    claim = (f'the map term protects beyond the score alone: {protected} has a lower artifact ratio than '
             f'{score_only} at no lower PSNR')
    paired = _paired(runs, protected, score_only)
    if paired is None:
        return {'claim': claim, 'holds': None, 'evidence': NO_SHARED_SEED}
    artifact_interval, psnr_interval, evidence = paired
    # "no lower PSNR" fails only where the PSNR difference is shown below 0; equality cannot be shown, only refuted
    no_lower_psnr = decide(psnr_interval, below=0.0) is not True
    return {'claim': claim, 'holds': all_of([decide(artifact_interval, below=0.0), no_lower_psnr]),
            'evidence': evidence}


def factor_claim(runs, factor, with_setup, without_setup):
    """Does ``factor`` protect? Paired differences ``without_setup`` - ``with_setup`` (see the module docstring)."""
    claim = (f'{factor} protects: without it ({without_setup}) the artifact ratio is higher or PSNR lower than '
             f'with it ({with_setup})')
    paired = _paired(runs, without_setup, with_setup)
    if paired is None:
        return {'claim': claim, 'holds': None, 'evidence': NO_SHARED_SEED}
    artifact_interval, psnr_interval, evidence = paired
    worse = True in (decide(artifact_interval, above=0.0), decide(psnr_interval, below=0.0))
    # strictly better without it (an interval of equal values shows no difference, not an improvement)
    better = bool(artifact_interval and artifact_interval['hi'] < 0 or psnr_interval and psnr_interval['lo'] > 0)
    holds = True if worse and not better else False if better and not worse else None
    return {'claim': claim, 'holds': holds, 'evidence': evidence}


def stability_claim(runs, unstable, protected, curve_std):
    """Is ``unstable`` less stable than ``protected``? Its PSNR change spreads more over the shared seeds."""
    claim = f'without CCL ({unstable}) training is less stable than {protected}'
    a, b = per_seed(runs, unstable, 'psnr_change'), per_seed(runs, protected, 'psnr_change')
    seeds = sorted(set(a) & set(b))
    interval = spread_difference_interval([a[s] for s in seeds], [b[s] for s in seeds])
    curves = (f'reward-curve std over seeds {curve_std.get(unstable, float("nan")):.4f} vs '
              f'{curve_std.get(protected, float("nan")):.4f}')
    if interval is None:
        return {'claim': claim, 'holds': None, 'evidence': f'{len(seeds)} shared seed(s): needs 3 or more; {curves}'}
    spread = describe(f'std of psnr_change {unstable} - {protected}', interval, '+.3f', kind='seed-bootstrap')
    return {'claim': claim, 'holds': decide(interval, above=0.0), 'evidence': f'{spread}; {curves}'}


def check_claims(runs, table, claims, curve_std=None, judge_fit=True):
    """The claims of the bench's ``claims`` section that its set-ups allow; [{'claim', 'holds', 'evidence'}].

    Args:
        runs (list[dict]): [{'setup', 'seed', 'summary': {column: value}}], one per set-up and seed.
        table (dict): ``aggregate.aggregate(runs)``.
        claims (dict): {'hacked', 'protected', 'unstable', 'score_only'}: set-up names (any may be absent).
            ``score_only`` is the protected recipe with the map term off. ``factors``: {factor: {'with': setup,
            'without': setup}}, two set-ups that differ in that factor alone.
        curve_std (dict | None): {setup: mean over iterations of the reward curves' std over seeds}.
        judge_fit (bool | None): ``judge_is_fit`` of the start: an unfit judge (False) is no part of a claim.
    """
    out = []
    hacked, protected = claims.get('hacked'), claims.get('protected')
    if hacked in table:
        out.append(hacked_claim(runs, hacked))
    if protected in table:
        out.append(protected_claim(runs, protected, judge_fit is not False))
    if claims.get('score_only') in table and protected in table:
        out.append(map_claim(runs, protected, claims['score_only']))
    for factor, pair in (claims.get('factors') or {}).items():
        if pair['with'] in table and pair['without'] in table:
            out.append(factor_claim(runs, factor, pair['with'], pair['without']))
    if claims.get('unstable') in table and protected in table and curve_std:
        out.append(stability_claim(runs, claims['unstable'], protected, curve_std))
    return out
