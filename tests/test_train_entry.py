"""The train entry end to end: checkpoints, training state, TensorBoard, auto-resume, torchrun, errors."""
import glob
import os
import socket

import pytest
import torch
from tests.helpers.opt import run_module, write_options

from finpercep_basicsr.train import main as train_main


def _events_scalars(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(tb_dir)
    acc.Reload()
    return acc.Tags()['scalars']


@pytest.mark.slow
def test_train_then_auto_resume_continues(tmp_path, fgr_folder):
    opt = write_options(tmp_path / 'opt.yml', dataroot=fgr_folder, train__total_iter=4)
    first = run_module(['finpercep_basicsr.train', '-opt', opt], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'test_rm_tiny'
    ckpt = torch.load(exp / 'models' / 'net_reward_4.pth', weights_only=True)
    assert set(ckpt) == {'params', 'params_ema'}
    state = torch.load(exp / 'training_states' / '4.state', weights_only=True)
    assert state['iter'] == 4 and len(state['optimizers']) == 1
    tags = _events_scalars(str(tmp_path / 'tb_logger' / 'test_rm_tiny'))
    assert 'losses/l_map' in tags and 'metrics/fgr_tiny_val/map_mae' in tags

    # the run "stopped" at 4 of 6: auto_resume must continue at iteration 5, not restart
    write_options(tmp_path / 'opt.yml', dataroot=fgr_folder, train__total_iter=6)
    second = run_module(['finpercep_basicsr.train', '-opt', opt, '--auto_resume'], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    log = open(sorted(glob.glob(str(exp / 'train_*.log')))[-1]).read()
    assert 'Resuming training from epoch: 1, iter: 4.' in log
    assert 'iter:       5,' in log and 'iter:       1,' not in log
    assert torch.load(exp / 'training_states' / '6.state', weights_only=True)['iter'] == 6
    assert not glob.glob(str(exp / '**' / '*.tmp'), recursive=True)

    # the test entry evaluates the trained checkpoint
    test_opt = write_options(tmp_path / 'test.yml', fixture='test_rm_tiny.yml', dataroot=fgr_folder,
                             path__pretrain_network_reward=str(exp / 'models' / 'net_reward_latest.pth'))
    evaluated = run_module(['finpercep_basicsr.test', '-opt', test_opt], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    test_log = open(glob.glob(str(tmp_path / 'results' / 'test_rm_tiny_eval' / 'test_*.log'))[0]).read()
    assert 'Validation fgr_tiny_test:' in test_log


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_use_gloo(tmp_path, fgr_folder):
    opt = write_options(tmp_path / 'opt.yml', dataroot=fgr_folder, train__total_iter=3, val=None)
    result = run_module(['torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(_free_port()),
                         '-m', 'finpercep_basicsr.train', '-opt', opt, '--launcher', 'pytorch'],
                        cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'test_rm_tiny'
    log = open(glob.glob(str(exp / 'train_*.log'))[0]).read()
    assert 'World size (gpu number): 2' in log
    assert os.path.isfile(exp / 'models' / 'net_reward_latest.pth')


def test_missing_option_file_is_a_clear_error(tmp_path, capsys):
    assert train_main(['-opt', str(tmp_path / 'nope.yml')]) == 2
    assert f'option file not found: {tmp_path / "nope.yml"}' in capsys.readouterr().err


def test_unknown_type_names_registry_and_close_match(tmp_path, fgr_folder, capsys):
    opt = write_options(tmp_path / 'opt.yml', dataroot=fgr_folder, network_reward__type='FinPercepRewardNett')
    assert train_main(['-opt', opt]) == 2
    err = capsys.readouterr().err
    assert "network_reward.type: 'FinPercepRewardNett' is not in BasicSR's arch registry" in err
    assert 'did you mean FinPercepRewardNet' in err


def test_missing_dataset_folder_is_named(tmp_path, capsys):
    opt = write_options(tmp_path / 'opt.yml', dataroot=tmp_path / 'no_such_fgr')
    assert train_main(['-opt', opt]) == 2
    assert f'datasets.train.dataroot: {tmp_path / "no_such_fgr"} does not exist' in capsys.readouterr().err


def test_missing_pretrained_checkpoint_is_named(tmp_path, fgr_folder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt = write_options(tmp_path / 'opt.yml', dataroot=fgr_folder,
                        path__pretrain_network_reward=str(tmp_path / 'missing.pth'))
    assert train_main(['-opt', opt]) == 2
    assert f'network checkpoint not found: {tmp_path / "missing.pth"}' in capsys.readouterr().err


@pytest.mark.parametrize('override, message', [
    ({'train__reward_opt__network_opt__type': 'FinPercepRewardNett'},
     "train.reward_opt.network_opt.type: 'FinPercepRewardNett' is not in BasicSR's arch registry; "
     "did you mean FinPercepRewardNet"),
    ({'train__ccl': {'stages': [{'start_iter': 0}, {'start_iter': 3, 'reward': {'type': 'FinPercepRewardLosss'}}]}},
     "train.ccl.stages[1].reward.type: 'FinPercepRewardLosss' is not in BasicSR's loss registry; "
     "did you mean FinPercepRewardLoss"),
    ({'train__ccl': {'stages': [{'start_iter': 0, 'reward': {'network_opt': {'type': 'FinPercepRewardNt'}}}]}},
     "train.ccl.stages[0].reward.network_opt.type: 'FinPercepRewardNt' is not in BasicSR's arch registry; "
     "did you mean FinPercepRewardNet"),
    ({'train__scheduler__type': 'MultiStepLRR'},
     "train.scheduler.type: 'MultiStepLRR' is not one of BasicSR's schedulers (MultiStepLR, MultiStepRestartLR, "
     "CosineAnnealingRestartLR); did you mean MultiStepLR"),
    ({'train__optim_g__type': 'Adamm'}, "train.optim_g.type: 'Adamm' is not one of BasicSR's optimizers"),
])
def test_unknown_nested_type_is_one_line_with_close_matches(tmp_path, capsys, override, message):
    from tests.helpers.rlhf import make_paired_folder, make_reward_checkpoint, write_rlhf_options
    data = make_paired_folder(tmp_path / 'data')
    opt = write_rlhf_options(tmp_path / 'opt.yml', data, make_reward_checkpoint(tmp_path / 'rm.pth'), **override)
    assert train_main(['-opt', opt]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and err.startswith(f'error: {opt}: '), err


@pytest.mark.slow
def test_unknown_nested_type_exits_2_from_the_command_line(tmp_path):
    from tests.helpers.rlhf import make_paired_folder, make_reward_checkpoint, write_rlhf_options
    data = make_paired_folder(tmp_path / 'data')
    opt = write_rlhf_options(tmp_path / 'opt.yml', data, make_reward_checkpoint(tmp_path / 'rm.pth'),
                             train__scheduler__type='CosineAnnealing')
    result = run_module(['finpercep_basicsr.train', '-opt', opt], cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert "train.scheduler.type: 'CosineAnnealing' is not one of BasicSR's schedulers" in result.stderr


@pytest.mark.slow
def test_a_reward_without_pretrain_path_exits_2_from_the_command_line(tmp_path):
    """Random reward weights must be asked for (random_init: true); a forgotten pretrain_path is an error."""
    import yaml
    from tests.helpers.rlhf import make_paired_folder, write_rlhf_options
    opt = write_rlhf_options(tmp_path / 'opt.yml', make_paired_folder(tmp_path / 'data'), 'unused.pth', val=None,
                             logger__use_tb_logger=False)
    with open(opt) as f:
        options = yaml.safe_load(f)
    del options['train']['reward_opt']['pretrain_path']
    with open(opt, 'w') as f:
        yaml.safe_dump(options, f)
    result = run_module(['finpercep_basicsr.train', '-opt', opt], cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and errors[0].startswith(
        'error: train.reward_opt: pretrain_path is not set: the reward network FinPercepRewardNet would score with '
        'random weights'), result.stderr[-3000:]
    assert 'random_init: true' in errors[0]


def test_trainable_pattern_matching_nothing_exits_2(tmp_path, capsys, monkeypatch):
    from tests.helpers.rlhf import make_paired_folder, make_reward_checkpoint, write_rlhf_options
    monkeypatch.chdir(tmp_path)
    data = make_paired_folder(tmp_path / 'data')
    opt = write_rlhf_options(tmp_path / 'opt.yml', data, make_reward_checkpoint(tmp_path / 'rm.pth'),
                             rlhf={'trainable': ['conv_tail.*']}, logger__use_tb_logger=False)
    assert train_main(['-opt', opt]) == 2
    err = capsys.readouterr().err
    assert "error: rlhf.trainable: 'conv_tail.*' matches no parameter of RRDBNet" in err and 'conv_first.weight' in err


def test_option_check_takes_a_list_of_fgr_roots_and_basicsr_suffixed_archs(tmp_path, fgr_folder):
    from finpercep_basicsr.utils.option_check import OptionError, check_options
    roots = {'datasets__train__dataroot': [fgr_folder, fgr_folder], 'datasets__train__dataroot_repeat': [1, 2]}
    check_options(write_options(tmp_path / 'list.yml', dataroot=fgr_folder, **roots), is_train=True)
    missing = dict(roots, datasets__train__dataroot=[fgr_folder, str(tmp_path / 'nope')])
    with pytest.raises(OptionError, match=r'datasets.train.dataroot: .*nope does not exist'):
        check_options(write_options(tmp_path / 'missing.yml', dataroot=fgr_folder, **missing), is_train=True)
    # BasicSR registers SRVGGNetCompact as SRVGGNetCompact_basicsr and finds it by the plain name
    srvgg = {'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 2, 'upscale': 4, 'act_type': 'prelu'}
    check_options(write_options(tmp_path / 'srvgg.yml', fixture='train_rlhf_tiny.yml', network_g=srvgg,
                                datasets__train__dataroot_gt=fgr_folder, datasets__train__dataroot_lq=fgr_folder,
                                datasets__val__dataroot_gt=fgr_folder, datasets__val__dataroot_lq=fgr_folder),
                  is_train=True)
