"""The hacking benchmark: aggregation over seeds, plan, artifact index, a tiny run end to end."""
import json
import os

import numpy as np
import pytest
import yaml
from tests.helpers.opt import FIXTURES
from tests.helpers.rlhf import TINY_RM, make_paired_folder, make_reward_checkpoint

from finpercep_basicsr.hacking import aggregate, plan, plots
from finpercep_basicsr.hacking.measure import artifact_index, color_shift, final_reward_options
from finpercep_basicsr.utils.errors import UserInputError



def _run(setup, seed, psnr, reward, judge=0.0, art=1.0):
    mean = {'psnr': psnr, f'reward/{setup}': reward, 'judge_score': judge, 'artifact_index': art}
    return {'setup': setup, 'seed': seed, 'summary': aggregate.run_summary(setup, mean, START)}


START = {'psnr': 22.0, 'reward/a': 0.5, 'reward/b': -1.0, 'reward/g': 0.0, 'reward/c': 0.5, 'judge_score': 0.1,
         'artifact_index': 2.0}


def test_aggregate_mean_std_over_seeds_hand_computed():
    runs = [_run('a', 0, 20.0, 1.5), _run('a', 1, 22.0, 2.5), _run('a', 2, 24.0, 0.5), _run('b', 0, 21.0, -0.5)]
    table = aggregate.aggregate(runs)
    assert table['a']['psnr'] == {'mean': 22.0, 'std': 2.0, 'n': 3}  # sample std of 20, 22, 24
    assert table['a']['reward_gain']['mean'] == pytest.approx(1.0)  # (1.0 + 2.0 + 0.0) / 3 against start 0.5
    assert table['a']['reward_gain']['std'] == pytest.approx(1.0)
    assert table['a']['psnr_change']['mean'] == pytest.approx(0.0)
    assert table['b']['reward_gain'] == {'mean': 0.5, 'std': 0.0, 'n': 1}  # -0.5 - (-1.0); one seed: std 0
    assert table['b']['judge_gain']['mean'] == pytest.approx(-0.1)
    assert table['b']['artifact_ratio']['mean'] == pytest.approx(0.5)


def test_seed_band_and_curve_std():
    steps, mean, std = plots.seed_band([([5, 10, 15], [1.0, 2.0, 3.0]), ([5, 10], [3.0, 4.0])])
    assert list(steps) == [5, 10] and list(mean) == [2.0, 3.0] and list(std) == [1.0, 1.0]
    assert plots.curve_std({'x': [([1, 2], [0.0, 1.0])]}) == {'x': 0.0}


def test_artifact_index_is_relative_laplacian_energy():
    rng = np.random.default_rng(0)
    gt = (0.25 + 0.5 * rng.random((32, 32, 3))).astype(np.float32)
    assert artifact_index(gt, gt) == pytest.approx(1.0)
    # doubling the contrast doubles the Laplacian: energy x4
    assert artifact_index((gt - 0.5) * 2 + 0.5, gt) == pytest.approx(4.0, rel=1e-4)
    flat = np.full_like(gt, 0.5)
    assert artifact_index(flat, gt) == pytest.approx(0.0)


def test_color_shift_is_the_rms_of_the_mean_colour_difference():
    rng = np.random.default_rng(0)
    gt = (0.25 + 0.5 * rng.random((32, 32, 3))).astype(np.float32)
    assert color_shift(gt, gt) == pytest.approx(0.0, abs=1e-7)
    texture = rng.standard_normal((32, 32, 3)).astype(np.float32) * 0.1
    assert color_shift(gt + texture - texture.mean((0, 1)), gt) == pytest.approx(0.0, abs=1e-6)  # detail: no cast
    cast = gt + np.array([0.0, -0.03, 0.04], np.float32)
    assert color_shift(cast, gt) == pytest.approx(np.sqrt((0.03 ** 2 + 0.04 ** 2) / 3), rel=1e-4)


def test_gain_of_margin_is_the_reward_gain_over_the_set_ups_own_margin():
    summary = aggregate.run_summary('a', {'reward/a': 0.53}, {'reward/a': 0.5}, margin=0.1)
    assert summary['reward_gain'] == pytest.approx(0.03) and summary['gain_of_margin'] == pytest.approx(0.3)
    assert 'gain_of_margin' not in aggregate.run_summary('a', {'reward/a': 0.53}, {'reward/a': 0.5})  # no ceiling
    assert 'gain_of_margin' not in aggregate.run_summary('a', {'reward/a': 0.53}, {'reward/a': 0.5}, margin=0.0)


def test_detail_error_is_the_error_above_the_lq_band_in_thousandths():
    import torch
    from finpercep_basicsr.hacking.error_bands import error_bands
    from finpercep_basicsr.hacking.measure import HackingScorers

    rng = np.random.default_rng(0)
    gt = torch.from_numpy(0.25 + 0.5 * rng.random((1, 3, 32, 32)).astype(np.float32))
    scorers = HackingScorers({}, no_reference=None, scale=4)
    assert 'detail_error' in scorers.columns() and scorers(gt, gt)['detail_error'] == pytest.approx(0.0, abs=1e-9)
    cast = scorers(gt + 0.05, gt)  # a colour cast costs PSNR and is no detail error
    assert cast['color_shift'] == pytest.approx(0.05, rel=1e-4) and cast['detail_error'] == pytest.approx(0, abs=1e-6)
    noisy = gt + 0.1 * torch.from_numpy(rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    expected = 1e3 * error_bands(noisy[0].permute(1, 2, 0).numpy(), gt[0].permute(1, 2, 0).numpy(), 4)['detail']
    assert scorers(noisy, gt)['detail_error'] == pytest.approx(expected) and expected > 1.0


def test_judge_prefers_gt_is_whether_the_judge_ranks_gt_above_the_output():
    import torch
    from finpercep_basicsr.hacking.bench import judge_check_note
    from finpercep_basicsr.hacking.measure import HackingScorers

    def brightness_judge(img):  # a judge that likes bright images
        return {'score': img.mean(dim=(1, 2, 3)), 'pdm': torch.zeros_like(img[:, :1])}

    scorers = HackingScorers({}, brightness_judge, no_reference=None)
    dark, bright = torch.full((1, 3, 8, 8), 0.3), torch.full((1, 3, 8, 8), 0.6)
    assert scorers(dark, bright)['judge_prefers_gt'] == 1.0
    assert scorers(bright, dark)['judge_prefers_gt'] == 0.0
    assert 'judge_prefers_gt' in scorers.columns()
    assert '9 of 24' in judge_check_note(9 / 24, 24) and 'cannot be read' in judge_check_note(9 / 24, 24)
    assert 'more often than not' in judge_check_note(17 / 24, 24)


def _bench_file(tmp_path, judge=True, **extra):
    data = make_paired_folder(tmp_path / 'pairs', num=2, size=32, identical=False)
    ckpt = make_reward_checkpoint(tmp_path / 'rm.pth', responsive=True)
    judge_ckpt = make_reward_checkpoint(tmp_path / 'judge.pth', seed=3)
    judge_opt = tmp_path / 'judge.yml'
    judge_opt.write_text(yaml.safe_dump({'network_reward': TINY_RM, 'path': {
        'pretrain_network_reward': judge_ckpt, 'param_key_reward': 'params'}}))
    template = os.path.join(FIXTURES, 'train_rlhf_tiny.yml')
    common = {'datasets.train.dataroot_gt': f'{data}/gt', 'datasets.train.dataroot_lq': f'{data}/lq',
              'datasets.val.dataroot_gt': f'{data}/gt', 'datasets.val.dataroot_lq': f'{data}/lq',
              'train.reward_opt.pretrain_path': ckpt, 'train.total_iter': 2, 'val.val_freq': 1000,
              'logger.save_checkpoint_freq': 1000}
    bench = {'name': 'tiny', 'seeds': [0, 1], 'common': common,
             'setups': {'global_only': {'opt': template, 'overrides': {'train.reward_opt.lambda_map': 0.0}},
                        'finpercep': {'opt': template, 'overrides': {'train.reward_opt.reference_margin': 0.0}}},
             'evaluation': {'lq': f'{data}/lq', 'gt': f'{data}/gt', 'judge': str(judge_opt) if judge else None,
                            'metrics': ['psnr', 'ssim'], 'no_reference': 'piqe', 'split': 'test'},
             'claims': {'hacked': 'global_only', 'protected': 'finpercep', 'unstable': 'global_only'}}
    bench.update(extra)
    path = tmp_path / 'bench.yml'
    path.write_text(yaml.safe_dump(bench))
    return str(path)


def test_plan_writes_one_file_per_setup_and_seed(tmp_path):
    opt = plan.load_bench_options(_bench_file(tmp_path), seeds=[4], setups=['finpercep'])
    runs = plan.write_run_options(opt, str(tmp_path / 'out'))
    assert [(s, seed) for s, seed, _ in runs] == [('finpercep', 4)]
    with open(runs[0][2]) as f:
        written = yaml.safe_load(f)
    assert written['name'] == 'tiny_finpercep_s4' and written['manual_seed'] == 4
    assert written['train']['total_iter'] == 2
    assert final_reward_options(runs[0][2])['lambda_map'] == 1.0


@pytest.mark.parametrize('change, message', [
    ({'evaluation': {'gt': 'x'}}, 'evaluation.lq is required'),
    ({'seedz': [1]}, 'unknown key(s) seedz'),
    ({'claims': {'hackd': 'a'}}, 'unknown key(s) hackd'),
    ({'claims': {'factors': {'ceiling': {'with': 'finpercep'}}}}, 'claims.factors.ceiling needs {with: SETUP'),
    ({'extends': 'nowhere.yml'}, 'bench option file not found: nowhere.yml'),
    ({'evaluation': {'lq': 'x', 'gt': 'y', 'split': 'train'}}, "split must be one of dev, test, got 'train'"),
    ({'chosen_on_dev': {'train.optim_g.lr': 'by eye'}}, 'chosen_on_dev.train.optim_g.lr names no value of common'),
])
def test_bad_bench_options_name_the_key(tmp_path, change, message):
    with pytest.raises(UserInputError, match=message.replace('(', r'\(').replace(')', r'\)')):
        plan.load_bench_options(_bench_file(tmp_path, **change))


def test_chosen_on_dev_names_a_value_of_common_or_one_inside_it(tmp_path):
    chosen = {'train.total_iter': 'two steps', 'train.reward_opt.pretrain_path': 'the tiny RM'}
    opt = plan.load_bench_options(_bench_file(tmp_path, chosen_on_dev=chosen, evaluation={'lq': 'l', 'gt': 'g'},
                                              seeds=None))
    assert opt['chosen_on_dev'] == chosen and opt['evaluation']['split'] == 'dev'  # dev unless the file says test
    assert opt['seeds'] == list(range(8))  # eight seeds unless the file names its own
    common = {'train.pixel_opt': {'type': 'L1Loss', 'inner': {'weight': 1}}, 'train.total_iter': 2}
    assert plan._sets_key(common, 'train.pixel_opt.inner.weight') and plan._sets_key(common, 'train.pixel_opt')
    assert not plan._sets_key(common, 'train.pixel_opt.weight') and not plan._sets_key(common, 'train.total')


def test_unknown_setup_is_named(tmp_path):
    from finpercep_basicsr.hacking.bench import run_bench
    with pytest.raises(UserInputError, match='nope'):
        run_bench(_bench_file(tmp_path), str(tmp_path / 'o'), setups=['nope'])


@pytest.mark.slow
def test_tiny_bench_end_to_end_and_rerun_skips(tmp_path, monkeypatch, capsys):
    from finpercep_basicsr.hacking.bench import run_bench
    monkeypatch.chdir(tmp_path)
    bench = _bench_file(tmp_path)
    run_bench(bench, 'bench', jobs=2, grid_images=1)
    with open('bench/results.json') as f:
        results = json.load(f)
    assert set(results['setups']) == {'global_only', 'finpercep'}
    for setup in ('global_only', 'finpercep'):
        cols = results['setups'][setup]
        assert cols['psnr']['n'] == 2
        for key in ('reward_gain', 'judge_score', 'judge_pdm_rate', 'artifact_index', 'color_shift', 'piqe', 'ssim',
                    'detail_error'):
            assert np.isfinite(cols[key]['mean']), key
        assert cols['judge_prefers_gt']['mean'] in (0.0, 0.5, 1.0)  # a rate over the 2 images
    # a margin-0 ceiling caps every image of the first of the 2 steps (the policy is still the reference); none: none
    assert 0.5 <= results['setups']['finpercep']['capped_share']['mean'] <= 1.0
    assert 'capped_share' not in results['setups']['global_only']
    assert results['start']['judge_prefers_gt'] in (0.0, 0.5, 1.0)
    assert any(n.startswith('judge check: it scores GT above the start generator') for n in results['notes'])
    runs = {r['run']: r for r in results['runs']}
    assert set(runs) == {'global_only_s0', 'global_only_s1', 'finpercep_s0', 'finpercep_s1'}
    # the two seeds are different runs
    assert runs['finpercep_s0']['mean'] != runs['finpercep_s1']['mean']
    assert len(results['claims']) == 3  # score_only is not set in this bench file
    assert results['split'] == 'test'
    with open('bench/results.md') as f:
        assert '(test split: photos never used to choose a value' in f.readline()
    for name in ('gain_vs_psnr.png', 'reward_curves.png', 'results.md'):
        assert os.path.isfile(os.path.join('bench', name)), name
    assert len(results['grids']) == 1 and os.path.isfile(os.path.join('bench', results['grids'][0]))
    # a rerun trains nothing, re-reads the cached measurements and keeps the trainings' times
    mtime = os.path.getmtime('bench/measure/finpercep_s0.json')
    trained = json.load(open('bench/timings.json'))
    assert set(trained) == set(runs) and all(seconds > 0 for seconds in trained.values())
    capsys.readouterr()
    run_bench(bench, 'bench', jobs=2)
    assert 'done already, skipped' in capsys.readouterr().err
    assert os.path.getmtime('bench/measure/finpercep_s0.json') == mtime
    assert json.load(open('bench/timings.json')) == trained


def test_an_experiment_trained_from_other_options_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt = plan.load_bench_options(_bench_file(tmp_path), setups=['finpercep'], seeds=[0])
    (setup, seed, path), = plan.write_run_options(opt, 'out')
    folder = tmp_path / plan.experiment_dir(path)
    folder.mkdir(parents=True)
    with open(path) as f:
        same = yaml.safe_load(f)
    (folder / os.path.basename(path)).write_text('# GENERATE TIME: copied by BasicSR\n' + yaml.safe_dump(same))
    plan.check_experiments_match([(setup, seed, path)])  # the same recipe: resumed or skipped
    same['train']['optim_g']['lr'] = 0.5
    (folder / os.path.basename(path)).write_text(yaml.safe_dump(same))
    with pytest.raises(UserInputError, match='trained from other options.*differs in: train'):
        plan.check_experiments_match([(setup, seed, path)])


def test_a_finished_run_whose_reward_checkpoint_changed_is_not_reused(tmp_path, monkeypatch):
    # a new shipped reward model under the same path: the options match, the checkpoint does not
    monkeypatch.chdir(tmp_path)
    opt = plan.load_bench_options(_bench_file(tmp_path), setups=['finpercep'], seeds=[0])
    runs = plan.write_run_options(opt, 'out')
    inputs = plan.stamp_checkpoints(runs)
    (setup, seed, path), = runs
    reward_ckpt = opt['common']['train.reward_opt.pretrain_path']
    assert reward_ckpt in inputs and len(inputs[reward_ckpt]) == 64
    with open(path) as f:
        stamped = yaml.safe_load(f)
    assert stamped[plan.INPUTS_KEY] == inputs
    with open(path) as f:
        assert f.readline().startswith('# Written by scripts/bench_hacking.py')  # the header survives the stamp
    folder = tmp_path / plan.experiment_dir(path)
    folder.mkdir(parents=True)
    (folder / os.path.basename(path)).write_text(yaml.safe_dump(stamped))  # as the train entry copies it
    plan.check_experiments_match(runs)
    with open(reward_ckpt, 'ab') as f:  # retrained, exported again
        f.write(b'\0')
    plan.stamp_checkpoints(runs)
    with pytest.raises(UserInputError, match=f'bench_inputs: checkpoints changed or not recorded: {reward_ckpt}'):
        plan.check_experiments_match(runs)
    # a folder of a bench that recorded no checkpoints cannot be trusted either
    del stamped[plan.INPUTS_KEY]
    (folder / os.path.basename(path)).write_text(yaml.safe_dump(stamped))
    with pytest.raises(UserInputError, match='checkpoints changed or not recorded'):
        plan.check_experiments_match(runs)


def test_cached_measurements_are_dropped_when_a_checkpoint_changes(tmp_path, capsys):
    from finpercep_basicsr.hacking.bench import drop_stale_measurements
    folder = tmp_path / 'measure'
    drop_stale_measurements(str(folder), {'rm.pth': 'a'})
    (folder / 'start.json').write_text('{}')
    drop_stale_measurements(str(folder), {'rm.pth': 'a'})
    assert (folder / 'start.json').is_file()
    drop_stale_measurements(str(folder), {'rm.pth': 'b'})
    assert not (folder / 'start.json').exists()
    assert 'checkpoints changed' in capsys.readouterr().err
    with open(folder / 'inputs.json') as f:
        assert json.load(f) == {'rm.pth': 'b'}


def test_a_missing_judge_checkpoint_names_the_option_file(tmp_path):
    from finpercep_basicsr.hacking.bench import load_judge
    judge = tmp_path / 'judge.yml'
    judge.write_text(yaml.safe_dump({'network_reward': TINY_RM, 'path': {'pretrain_network_reward': 'nowhere.pth'}}))
    with pytest.raises(UserInputError, match=r'evaluation.judge .*judge.yml.*nowhere.pth'):
        load_judge(str(judge))


def test_a_setup_override_below_a_common_mapping_does_not_leak_into_other_setups(tmp_path):
    reward = {'type': 'FinPercepRewardLoss', 'network_opt': TINY_RM, 'pretrain_path': 'rm.pth', 'lambda_map': 1.0}
    template = os.path.join(FIXTURES, 'train_rlhf_tiny.yml')
    bench = {'name': 'b', 'common': {'train.reward_opt': reward},
             'setups': {'a': {'opt': template, 'overrides': {'train.reward_opt.lambda_map': 0.0}},
                        'b': {'opt': template}},
             'evaluation': {'lq': 'x', 'gt': 'y'}}
    path = tmp_path / 'bench.yml'
    path.write_text(yaml.safe_dump(bench))
    runs = plan.write_run_options(plan.load_bench_options(str(path)), str(tmp_path / 'out'))
    maps = {setup: final_reward_options(file)['lambda_map'] for setup, _, file in runs}
    assert maps == {'a': 0.0, 'b': 1.0}


def test_threads_per_job_split_the_cores_and_respect_the_callers_cap(monkeypatch):
    from finpercep_basicsr.hacking.bench import threads_per_job
    monkeypatch.setattr(os, 'cpu_count', lambda: 8)
    assert threads_per_job(1, {}) == 8 and threads_per_job(2, {}) == 4 and threads_per_job(16, {}) == 1
    assert threads_per_job(2, {'OMP_NUM_THREADS': '1'}) == 1  # another job already shares the machine
    assert threads_per_job(1, {'OMP_NUM_THREADS': '32'}) == 8
    assert threads_per_job(2, {'OMP_NUM_THREADS': 'auto'}) == 4 and threads_per_job(2, {'OMP_NUM_THREADS': '0'}) == 4


def test_a_cached_measurement_is_reused_only_when_it_holds_every_column(tmp_path):
    from finpercep_basicsr.hacking.measure import measure_generator

    class Scorers:
        def columns(self, setups=None):
            return {f'reward/{s}' for s in (setups or ['a', 'b'])} | {'artifact_index'}

    pairs = [('x', 'lq/x.png', 'gt/x.png'), ('y', 'lq/y.png', 'gt/y.png')]
    cache = tmp_path / 'run.json'
    row = {'psnr': 20.0, 'reward/a': 0.1, 'artifact_index': 1.0}
    cache.write_text(json.dumps({'x': row, 'y': row}))
    missing = str(tmp_path / 'no_such_run')  # loading it fails: a reused cache never gets there
    # the run's own reward is all a run needs; the start needs every set-up's
    assert measure_generator(missing, pairs, {'psnr': None}, Scorers(), cache=str(cache),
                             required={'psnr', 'reward/a', 'artifact_index'})['y'] == row
    with pytest.raises((UserInputError, FileNotFoundError)):
        measure_generator(missing, pairs, {'psnr': None}, Scorers(), cache=str(cache))  # reward/b was added
    with pytest.raises((UserInputError, FileNotFoundError)):
        measure_generator(missing, pairs + [('z', 'lq/z.png', 'gt/z.png')], {'psnr': None}, Scorers(),
                          cache=str(cache), required={'psnr'})  # an image was added
