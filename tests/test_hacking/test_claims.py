"""The claims are decided over seeds: 95 % t intervals, paired between set-ups; one seed decides nothing."""
import numpy as np
import pytest

from finpercep_basicsr.evaluation.report import claim_verdict
from finpercep_basicsr.hacking import aggregate
from finpercep_basicsr.hacking.claims import check_claims, judge_is_fit, map_claim
from finpercep_basicsr.metrics.directions import JUDGE_COLUMNS
from finpercep_basicsr.hacking.statistics import decide, paired_differences, t_interval

START = {'psnr': 22.0, 'reward/g': 0.0, 'reward/c': 0.5, 'reward/a': 0.5, 'judge_score': 0.1, 'artifact_index': 2.0}


def _run(setup, seed, psnr, reward, judge=0.0, art=2.0):
    mean = {'psnr': psnr, f'reward/{setup}': reward, 'judge_score': judge, 'artifact_index': art}
    return {'setup': setup, 'seed': seed, 'summary': aggregate.run_summary(setup, mean, START)}


def _claims(runs, **claims):
    return check_claims(runs, aggregate.aggregate(runs), claims)


def test_t_interval_hand_computed():
    # mean 2, sample sd 1, n 3: half width t(0.975, 2 dof) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval['mean'] == pytest.approx(2.0) and interval['n'] == 3
    assert interval['lo'] == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert interval['hi'] == pytest.approx(2.0 + 2.484138, abs=1e-6)
    assert t_interval([5.0]) is None and t_interval([]) is None
    assert decide(interval, above=-1.0) is True and decide(interval, above=0.0) is None
    assert decide(interval, above=5.0) is False and decide(interval, below=5.0) is True


def test_differences_are_paired_by_seed():
    runs = [_run('c', 2, 21.0, 0.6, art=4.0), _run('c', 0, 21.0, 0.6, art=2.0), _run('a', 0, 21.0, 1.0, art=2.2),
            _run('a', 1, 21.0, 1.0, art=9.0), _run('a', 2, 21.0, 1.0, art=4.2)]
    assert paired_differences(runs, 'c', 'a', 'artifact_ratio') == pytest.approx([-0.1, -0.1])  # seeds 0 and 2


def test_a_clear_paired_difference_holds_where_the_spreads_overlap():
    # artifact ratios 1.0-2.0 over seeds for both, but each seed's score-only run is 0.1 worse than the protected one
    protected = [_run('c', s, 21.9, 0.8, art=2.0 + s) for s in range(3)]
    score_only = [_run('a', s, 21.9, 1.5, art=2.2 + s) for s in range(3)]
    claim = map_claim(protected + score_only, 'c', 'a')
    assert claim['holds'] is True and claim_verdict(claim) == 'holds'
    assert 'artifact_ratio -0.100 [-0.100, -0.100] (3 seeds, 95% t interval)' in claim['evidence']
    assert map_claim(protected + score_only, 'a', 'c')['holds'] is False  # the other way round: refuted


def test_a_difference_within_the_noise_is_not_resolved():
    protected = [_run('c', s, 21.9, 0.8, art=art) for s, art in enumerate([2.2, 2.6, 2.3])]
    score_only = [_run('a', s, 21.9, 1.5, art=art) for s, art in enumerate([2.4, 2.5, 2.5])]  # means 1.18 vs 1.23
    claim = map_claim(protected + score_only, 'c', 'a')
    assert claim['holds'] is None and claim_verdict(claim) == 'not resolved'
    assert '[' in claim['evidence'] and '3 seeds' in claim['evidence']


def test_a_psnr_shown_lower_refutes_the_map_claim():
    protected = [_run('c', s, 21.0 + 0.01 * s, 0.8, art=2.0) for s in range(3)]
    score_only = [_run('a', s, 21.5 + 0.01 * s, 1.5, art=3.0) for s in range(3)]
    assert map_claim(protected + score_only, 'c', 'a')['holds'] is False


def test_one_seed_gives_no_verdict():
    runs = [_run('g', 0, 20.0, 1.0, art=4.0), _run('c', 0, 21.9, 0.8, judge=0.3, art=2.2),
            _run('a', 0, 21.0, 1.5, art=3.0)]
    claims = _claims(runs, hacked='g', protected='c', score_only='a')
    assert [c['holds'] for c in claims] == [None, None, None]
    assert all('1 seed: no interval' in c['evidence'] for c in claims)


def test_single_set_up_claims_read_each_part_s_interval():
    hacked = [_run('g', s, 20.0 - 0.1 * s, 1.0 + 0.1 * s, art=4.0 + 0.1 * s) for s in range(3)]  # -2 dB, x2
    safe = [_run('c', s, 21.9 - 0.02 * s, 0.8, judge=0.3 + 0.01 * s, art=2.2) for s in range(3)]  # -0.1 dB, x1.1
    assert [c['holds'] for c in _claims(hacked + safe, hacked='g', protected='c')] == [True, True]
    bad = [_run('c', s, 21.5 + 0.01 * s, 0.8, judge=0.3, art=2.2) for s in range(3)]  # -0.5 dB: not protected
    claim = _claims(bad, protected='c')[0]
    assert claim['holds'] is False and 'psnr_change -0.49' in claim['evidence']
    noisy = [_run('c', s, psnr, 0.8, judge=0.3, art=2.2) for s, psnr in enumerate([22.3, 21.5, 21.6])]
    assert _claims(noisy, protected='c')[0]['holds'] is None  # PSNR -0.2 with an interval spanning -0.3


def test_stability_needs_three_shared_seeds():
    runs = [_run('g', s, 20.0 + s, 1.0) for s in range(2)] + [_run('c', s, 21.9, 0.8) for s in range(3)]
    claim = check_claims(runs, aggregate.aggregate(runs), {'protected': 'c', 'unstable': 'g'}, {'g': 0.0, 'c': 0.0})
    assert claim[-1]['holds'] is None and claim_verdict(claim[-1]) == 'not resolved'
    assert claim[-1]['evidence'].startswith('2 shared seed(s): needs 3 or more')


def test_stability_is_decided_on_a_seed_paired_bootstrap_of_the_spreads():
    wild = [-2.0, 1.5, -1.8, 2.0, -2.2, 1.9, -1.5, 2.1]
    calm = [0.10, 0.12, 0.08, 0.11, 0.09, 0.10, 0.12, 0.08]
    runs = [_run('g', s, 22.0 + w, 1.0) for s, w in enumerate(wild)] + [_run('c', s, 22.0 + v, 0.8)
                                                                         for s, v in enumerate(calm)]
    claims = {'protected': 'c', 'unstable': 'g'}
    claim = check_claims(runs, aggregate.aggregate(runs), claims, {'g': 0.1, 'c': 0.05})[-1]
    assert claim['holds'] is True and 'seed-bootstrap interval' in claim['evidence']
    # the same spread on both: a difference of spreads the seeds cannot show
    alike = [_run('c', s, 22.0 - w, 0.8) for s, w in enumerate(wild[::-1])]
    same = [r for r in runs if r['setup'] == 'g'] + alike
    assert check_claims(same, aggregate.aggregate(same), claims, {'g': 0.1, 'c': 0.1})[-1]['holds'] is None
    # a calmer set-up without CCL: refuted
    swapped = [dict(r, setup={'g': 'c', 'c': 'g'}[r['setup']]) for r in runs]
    assert check_claims(swapped, aggregate.aggregate(swapped), claims, {'g': 0.1, 'c': 0.1})[-1]['holds'] is False


def test_spread_difference_interval_hand_checked():
    from finpercep_basicsr.hacking.statistics import spread_difference_interval
    assert spread_difference_interval([1.0, 2.0], [0.0, 0.0]) is None
    same = spread_difference_interval([1.0, 2.0, 4.0], [1.0, 2.0, 4.0])
    assert same == {'mean': 0.0, 'lo': 0.0, 'hi': 0.0, 'n': 3}  # every resample draws the same seeds from both
    shifted = spread_difference_interval([1.0, 2.0, 4.0], [0.0, 0.0, 0.0])
    assert shifted['mean'] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1)) and shifted['lo'] == 0.0


def test_an_unfit_judge_is_no_part_of_the_protected_claim():
    # the judge's gain spans zero; the other parts clear their bars on every seed
    safe = [_run('c', s, 21.9 - 0.02 * s, 0.8, judge=judge, art=2.2) for s, judge in enumerate([0.0, 0.3, 0.1])]
    fit, = check_claims(safe, aggregate.aggregate(safe), {'protected': 'c'}, judge_fit=True)
    unfit, = check_claims(safe, aggregate.aggregate(safe), {'protected': 'c'}, judge_fit=False)
    assert fit['holds'] is None and 'judge_gain' in fit['evidence']
    assert unfit['holds'] is True and 'judge_gain' not in unfit['evidence'] and 'unfit' in unfit['evidence']
    assert judge_is_fit({'judge_prefers_gt': 0.9}) is True and judge_is_fit({'judge_prefers_gt': 0.375}) is False
    assert judge_is_fit({}) is None


def test_the_table_marks_an_unfit_judge():
    runs = [_run('c', s, 21.9, 0.8, judge=0.2) for s in range(2)]
    md = aggregate.markdown(aggregate.aggregate(runs), ['psnr', 'judge_score'], unfit=JUDGE_COLUMNS)
    assert md.splitlines()[-1] == '| c (n=2) | 21.9000 ± 0.0000 | unfit |'


def test_a_factor_protects_when_switching_it_off_is_shown_worse():
    with_it = [_run('c', s, 21.9, 0.8, art=2.0 + 0.5 * s) for s in range(3)]
    without = [_run('a', s, 21.9 - 0.01 * s, 1.5, art=2.4 + 0.5 * s) for s in range(3)]  # +0.2 ratio every seed
    factors = {'ceiling': {'with': 'c', 'without': 'a'}}
    claim, = _claims(with_it + without, factors=factors)
    assert claim['holds'] is True and 'paired differences a - c' in claim['evidence']
    helps = [_run('a', s, 21.9, 1.5, art=1.6 + 0.5 * s) for s in range(3)]  # switching it off: fewer artifacts
    assert _claims(with_it + helps, factors=factors)[0]['holds'] is False
    noisy = [_run('a', s, 21.9, 1.5, art=art) for s, art in enumerate([2.2, 2.3, 2.9])]  # -0.2 / -0.2 / -0.1
    assert _claims(with_it + noisy, factors=factors)[0]['holds'] is None
