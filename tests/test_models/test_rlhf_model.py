"""FinPercepRLHFModel: NaN guard, reference, CCL hand-over in training, bit-identical resume inside a ramp, DDP."""
import glob
import os
import re
import socket
from copy import deepcopy

import pytest
import torch
import yaml
from tests.helpers.opt import run_module
from tests.helpers.rlhf import (build_rlhf_model, make_paired_folder, make_reward_checkpoint, random_batch,
                                write_rlhf_options)

import finpercep_basicsr  # noqa: F401


@pytest.fixture
def setup(tmp_path):
    data = make_paired_folder(tmp_path / 'data')
    ckpts = [make_reward_checkpoint(tmp_path / f'rm{i}.pth', seed=i) for i in range(2)]
    return tmp_path, data, ckpts


def _ccl(ckpts, coevolve_every=0):
    """RM_0 global-only until iteration 3, then a 3-iteration ramp to RM_1 with the map term."""
    ccl = {'stages': [{'start_iter': 0, 'reward': {'pretrain_path': ckpts[0], 'lambda_map': 0.0}},
                      {'start_iter': 3, 'ramp_iters': 3, 'reward': {'pretrain_path': ckpts[1]}}]}
    if coevolve_every:
        ccl['coevolve'] = {'every': coevolve_every, 'optim': {'type': 'Adam', 'lr': 1e-3}}
    return ccl


def _snapshot(model):
    return (deepcopy(model.net_g.weights_module().state_dict()), deepcopy(model.net_g_ema.state_dict()),
            deepcopy(model.optimizer_g.state_dict()))


def _assert_same(a, b):
    for x, y in zip(a[:2], b[:2]):
        assert all(torch.equal(x[k], y[k]) for k in x)
    sa, sb = a[2]['state'], b[2]['state']
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]['step'], sb[i]['step']) for i in sa)


def test_nonfinite_reward_or_output_skips_the_step(setup, monkeypatch):
    tmp_path, data, ckpts = setup
    model = build_rlhf_model(tmp_path, data, ckpts[0])
    model.feed_data(random_batch())
    model.optimize_parameters(1)
    assert model.log_dict['l_ref'] == 0.0  # the reference is the policy before the first update
    before = _snapshot(model)

    reward_net = model.curriculum.active_module(2).net
    real_forward = reward_net.forward

    def nan_score(x):
        out = real_forward(x)
        return {'score': out['score'] * float('nan'), 'pdm': out['pdm']}
    monkeypatch.setattr(reward_net, 'forward', nan_score)
    model.optimize_parameters(2)
    _assert_same(before, _snapshot(model))
    assert model.nonfinite_skips == 1 and model.log_dict['nonfinite_skips'] == 1.0
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    assert all(p.grad is None for p in model.net_g.parameters())
    monkeypatch.setattr(reward_net, 'forward', real_forward)

    gen = model.net_g.net
    real_gen = gen.forward
    monkeypatch.setattr(gen, 'forward', lambda x: real_gen(x) * float('inf'))  # the generator blows up
    model.optimize_parameters(3)
    _assert_same(before, _snapshot(model))
    assert model.nonfinite_skips == 2
    monkeypatch.setattr(gen, 'forward', real_gen)

    model.optimize_parameters(4)  # training continues normally
    after = _snapshot(model)
    assert any(not torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert all(torch.isfinite(v).all() for v in after[0].values())
    assert model.extra_training_state()['nonfinite_skips'] == 2


def test_reward_alone_moves_the_generator_and_keeps_the_reference(setup):
    tmp_path, data, ckpts = setup
    model = build_rlhf_model(tmp_path, data, ckpts[0], train__pixel_opt=None, train__ema_decay=0)
    ref_before = deepcopy(model.net_ref.state_dict())
    start = deepcopy(model.net_g.state_dict())
    model.feed_data(random_batch())
    for it in range(1, 4):
        model.optimize_parameters(it)
    assert model.log_dict['reward'] > 0 and set(model.log_dict) >= {'l_reward', 'l_ref', 'score', 'map_peak'}
    assert any(not torch.equal(start[k], v) for k, v in model.net_g.state_dict().items())
    assert all(torch.equal(ref_before[k], v) for k, v in model.net_ref.state_dict().items())
    assert model.log_dict['l_ref'] > 0


def _train(tmp_path, opt_path, *extra):
    result = run_module(['finpercep_basicsr.train', '-opt', str(opt_path)] + list(extra), cwd=tmp_path,
                        env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _log_values(log_text, key):
    return {int(it): float(v) for it, v in re.findall(rf'iter:\s+(\d+),.*? {key}: (\S+)', log_text)}


@pytest.mark.slow
def test_resume_inside_a_ccl_ramp_is_bit_identical_with_distinct_images(setup):
    tmp_path, _, ckpts = setup
    data = make_paired_folder(tmp_path / 'distinct', identical=False)
    # BasicSR resumes by replaying the saved epoch (one iteration per epoch here): the resumed
    # iterations 4, 5 draw the sampler orders of epochs 2, 3 where the uninterrupted run draws 3, 4.
    # These orders agree, so distinct images still make the same batches in both runs.
    orders = [torch.randperm(2, generator=torch.Generator().manual_seed(e)).tolist() for e in (2, 3, 4)]
    assert orders[0] == orders[1] == orders[2]
    common = dict(train__ccl=_ccl(ckpts, coevolve_every=2), val=None, logger__save_checkpoint_freq=1)
    full = write_rlhf_options(tmp_path / 'full.yml', data, ckpts[0], name='full', **common)
    _train(tmp_path, full)
    part = write_rlhf_options(tmp_path / 'part.yml', data, ckpts[0], name='part', train__total_iter=3, **common)
    _train(tmp_path, part)  # stops after iteration 3, the first of the 3-iteration ramp to RM_1
    write_rlhf_options(tmp_path / 'part.yml', data, ckpts[0], name='part', train__total_iter=5, **common)
    _train(tmp_path, part, '--auto_resume')

    exp = tmp_path / 'experiments'
    log = open(glob.glob(str(exp / 'full' / 'train_*.log'))[0]).read()
    assert _log_values(log, 'ccl_stage') == {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 1.0}
    blend = _log_values(log, 'ccl_blend')
    assert [round(blend[i], 4) for i in range(1, 7)] == [1.0, 1.0, 0.3333, 0.6667, 1.0, 1.0]
    assert 'l_rm_map' in log  # co-evolution ran

    resumed_log = open(sorted(glob.glob(str(exp / 'part' / 'train_*.log')))[-1]).read()
    assert 'Resuming training from epoch: 2, iter: 3.' in resumed_log
    assert _log_values(resumed_log, 'ccl_stage') == {4: 1.0, 5: 1.0}
    assert {i: round(v, 4) for i, v in _log_values(resumed_log, 'ccl_blend').items()} == {4: 0.6667, 5: 1.0}
    for key in ('l_reward', 'score', 'map_peak', 'l_pix'):  # same batches, same rewards
        full_values = _log_values(log, key)
        assert _log_values(resumed_log, key) == {4: full_values[4], 5: full_values[5]}, key
    a = torch.load(exp / 'full' / 'models' / 'net_g_5.pth', weights_only=True)
    b = torch.load(exp / 'part' / 'models' / 'net_g_5.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    sa = torch.load(exp / 'full' / 'training_states' / '5.state', weights_only=True)
    sb = torch.load(exp / 'part' / 'training_states' / '5.state', weights_only=True)
    ea, eb = sa['extra']['curriculum']['refreshed_nets'], sb['extra']['curriculum']['refreshed_nets']
    assert ea.keys() == eb.keys() and len(ea) == 2  # both RMs were refreshed and restored
    assert all(torch.equal(ea[n][k], eb[n][k]) for n in ea for k in ea[n])
    ma, mb = sa['optimizers'][0]['state'], sb['optimizers'][0]['state']
    assert all(torch.equal(ma[i]['exp_avg_sq'], mb[i]['exp_avg_sq']) for i in ma)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_through_the_train_entry_with_tensorboard(setup):
    tmp_path, _, ckpts = setup
    data = make_paired_folder(tmp_path / 'data4', num=4)  # 2 samples per rank: one batch each
    opt = write_rlhf_options(tmp_path / 'ddp.yml', data, ckpts[0], train__total_iter=3,
                             train__ccl=_ccl(ckpts, coevolve_every=2), val__val_freq=3)
    result = run_module(['torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(_free_port()),
                         '-m', 'finpercep_basicsr.train', '-opt', opt, '--launcher', 'pytorch'],
                        cwd=tmp_path, env={'OMP_NUM_THREADS': '1'}, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'test_rlhf_tiny'
    log = open(glob.glob(str(exp / 'train_*.log'))[0]).read()
    assert 'World size (gpu number): 2' in log
    assert _log_values(log, 'nonfinite_skips') == {1: 0.0, 2: 0.0, 3: 0.0}
    assert 'Validation paired_tiny_val @ 3: psnr' in log and 'pdm_rate' in log
    assert 'l_rm_map' in log  # co-evolution with gradients averaged over the ranks
    ckpt = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt['params'].values())
    assert os.path.isfile(exp / 'models' / 'net_g_ref.pth')
    # rank 0's TensorBoard: each reward term, the curriculum stage, validation metrics, PDM images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / 'tb_logger' / 'test_rlhf_tiny'))
    acc.Reload()
    scalars = set(acc.Tags()['scalars'])
    assert {'losses/l_reward', 'losses/l_pix', 'losses/l_ref', 'losses/l_rm_map', 'reward', 'score', 'map_peak',
            'ccl_stage', 'ccl_blend', 'nonfinite_skips'} <= scalars
    assert {'metrics/paired_tiny_val/psnr', 'metrics/paired_tiny_val/pdm_rate'} <= scalars
    assert 'pdm/paired_tiny_val/0' in acc.Tags()['images']



@pytest.mark.parametrize('name', ['global', 'finpercep', 'finpercep_ccl'])
def test_shipped_option_files_name_registered_types_and_valid_stages(name):
    from finpercep_basicsr.curriculum.schedule import parse_stages
    from finpercep_basicsr.utils.option_check import _registries, _typed_entries
    path = os.path.join(os.path.dirname(__file__), '..', '..', 'options', 'train', 'RLHF', 'RealESRGAN',
                        f'rlhf_realesrgan_x4_{name}.yml')
    with open(path) as f:
        opt = yaml.safe_load(f)
    registries = _registries()
    for key_path, registry, type_name in _typed_entries(opt):
        if not key_path.startswith('train.optim_'):
            assert type_name in registries[registry], key_path
    stages = parse_stages(opt['train'])
    assert len(stages) == (4 if name == 'finpercep_ccl' else 1)
    assert [s['reward']['network_opt']['stage'] for s in stages] == (
        [0, 1, 2, 3] if name == 'finpercep_ccl' else [0 if name == 'global' else 3])


def test_rlhf_dataset_degrades_on_the_fly(tmp_path):
    from finpercep_basicsr.data.finpercep_rlhf_dataset import FinPercepRLHFDataset
    make_paired_folder(tmp_path / 'photos', num=2, size=48, identical=False)
    opt = {'dataroot_gt': str(tmp_path / 'photos' / 'gt'), 'scale': 4, 'gt_size': 32, 'phase': 'val', 'seed': 3}
    val = FinPercepRLHFDataset(opt)
    a, b = val[1], FinPercepRLHFDataset(opt)[1]
    assert a['lq'].shape == (3, 8, 8) and a['gt'].shape == (3, 32, 32)
    assert torch.equal(a['lq'], b['lq'])  # validation pairs are the same on every run
    train = FinPercepRLHFDataset({**opt, 'phase': 'train'})
    assert not torch.equal(train[1]['lq'], train[1]['lq'])  # fresh crops and degradations
    from finpercep_basicsr.utils.errors import UserInputError
    with pytest.raises(UserInputError, match='smaller than gt_size'):
        FinPercepRLHFDataset({**opt, 'gt_size': 64})[0]


def test_optional_gan_term_trains_a_discriminator_and_saves_it(setup):
    tmp_path, data, ckpts = setup
    model = build_rlhf_model(tmp_path, data, ckpts[0],
                         network_d={'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 8},
                         train__gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1},
                         train__optim_d={'type': 'Adam', 'lr': 1e-3})
    d_before = deepcopy(model.net_d.state_dict())
    model.feed_data(random_batch())
    model.optimize_parameters(1)
    assert {'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)
    assert any(not torch.equal(d_before[k], v) for k, v in model.net_d.state_dict().items())
    model.save(0, 1)
    assert set(torch.load(tmp_path / 'models' / 'net_d_1.pth', weights_only=True)) == {'params'}
    assert set(torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True)) == {'params', 'params_ema'}
    assert len(torch.load(tmp_path / 'states' / '1.state', weights_only=True)['optimizers']) == 2
