"""GRPO and DPO of a diffusion policy under DDP: 2 gloo CPU processes through the train entry, resume."""
import glob
import socket

import pytest
import torch
from tests.helpers.diffusion import make_sd_folder
from tests.helpers.opt import run_module
from tests.helpers.rlhf import make_paired_folder, make_reward_checkpoint, write_rlhf_options

from finpercep_basicsr.models.rl_algorithms import build_rl_algorithm, group_advantages
from finpercep_basicsr.utils.errors import UserInputError

pytestmark = pytest.mark.slow

GATHER_SCRIPT = '''
import sys, torch, torch.distributed as dist
from finpercep_basicsr.models.rl_algorithms import group_advantages
dist.init_process_group('gloo')
rank = dist.get_rank()
rewards = torch.load(sys.argv[1], weights_only=True)[rank]
for scope in ('global', 'group'):
    adv, std = group_advantages(rewards, 1e-4, scope)
    torch.save({'adv': adv, 'std': std}, sys.argv[2] + f'{scope}.{rank}')
dist.destroy_process_group()
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _torchrun(args, cwd, timeout=300):
    return run_module(['torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(_free_port())] + args,
                      cwd=cwd, env={'OMP_NUM_THREADS': '1'}, timeout=timeout)


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('diffusion_ddp')
    return {'sd': make_sd_folder(str(root / 'sd')), 'data': make_paired_folder(root / 'data', num=2),
            'rm': make_reward_checkpoint(root / 'rm.pth')}


def _options(assets, path, algorithm, total_iter):
    network = {'type': 'FinPercepOSEDiffGenerator', 'sd_path': assets['sd'], 'prompt': 'a photo', 'explore_sigma': 0.3}
    # one sample per rank and epoch (an epoch starts at every iteration, as after a resume), no flips:
    # the batches do not depend on where a run was stopped
    return write_rlhf_options(path, assets['data'], assets['rm'], network_g=network, val=None,
                              rlhf={'algorithm': algorithm, 'group_size': 2, 'kl_weight': 0.1, 'beta': 10.0,
                                    'adv_eps': 1e-12},  # the tiny random RM's rewards differ by ~1e-7
                              train__ema_decay=0, train__total_iter=total_iter, train__pixel_opt=None,
                              train__ref_opt=None, datasets__train__batch_size_per_gpu=1,
                              datasets__train__use_hflip=False, datasets__train__use_rot=False,
                              logger__save_checkpoint_freq=2, logger__use_tb_logger=True)


def _train(assets, cwd, algorithm, total_iter, *extra):
    opt = _options(assets, cwd / 'opt.yml', algorithm, total_iter)
    result = _torchrun(['-m', 'finpercep_basicsr.train', '-opt', opt, '--launcher', 'pytorch'] + list(extra), cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / 'experiments' / 'test_rlhf_tiny'


def _scalars(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()['scalars']}


def test_ddp_grpo_global_advantages_match_a_single_process_computation(tmp_path):
    torch.manual_seed(0)
    rewards = torch.rand(2, 3, 4)  # 2 ranks x 3 LQ x group of 4
    rewards[1] += 1.0  # the ranks' rewards differ in scale: a per-rank std would not match the global one
    torch.save(rewards, tmp_path / 'rewards.pt')
    (tmp_path / 'gather.py').write_text(GATHER_SCRIPT)
    result = _torchrun([str(tmp_path / 'gather.py'), str(tmp_path / 'rewards.pt'), str(tmp_path) + '/'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for scope in ('global', 'group'):
        single, single_std = group_advantages(rewards.reshape(6, 4), 1e-4, scope, gather=lambda x: x)
        for rank in (0, 1):
            got = torch.load(tmp_path / f'{scope}.{rank}', weights_only=True)
            assert torch.allclose(got['adv'], single[3 * rank:3 * rank + 3], atol=1e-6)
        if scope == 'global':
            assert torch.allclose(got['std'], single_std) and torch.allclose(single_std, rewards.std())


def test_ddp_grpo_through_the_train_entry(assets, tmp_path):
    exp = _train(assets, tmp_path, 'grpo', 2)
    log = open(glob.glob(str(exp / 'train_*.log'))[0]).read()
    assert 'World size (gpu number): 2' in log and 'trainable weights agree on 2 ranks' in log
    scalars = _scalars(tmp_path / 'tb_logger' / 'test_rlhf_tiny')
    for it in (1, 2):
        assert scalars['adv_std'][it] > 0 and scalars['adv_abs'][it] > 0.1  # normalised, not floored by eps
        assert scalars['nonfinite_skips'][it] == 0
    start = torch.load(exp / 'models' / 'net_g_ref.pth', weights_only=True)['params']
    params = torch.load(exp / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert params.keys() == start.keys() and all('lora_' in k or 'conv_in' in k for k in params)
    assert any(not torch.equal(params[k], start[k]) for k in params)


def test_ddp_dpo_through_the_train_entry(assets, tmp_path):
    exp = _train(assets, tmp_path, 'dpo', 2)
    log = open(glob.glob(str(exp / 'train_*.log'))[0]).read()
    assert 'World size (gpu number): 2' in log and 'trainable weights agree on 2 ranks' in log
    scalars = _scalars(tmp_path / 'tb_logger' / 'test_rlhf_tiny')
    assert set(scalars['losses/l_dpo']) == {1, 2} and scalars['nonfinite_skips'][2] == 0


def test_dpo_with_one_sample_per_group_is_a_clear_error():
    with pytest.raises(UserInputError, match='dpo ranks two samples of each LQ'):
        build_rl_algorithm({'algorithm': 'dpo', 'group_size': 1})


def test_ddp_resume_is_bit_identical_on_every_rank(assets, tmp_path):
    whole = _train(assets, tmp_path / 'whole', 'grpo', 4)
    part = _train(assets, tmp_path / 'part', 'grpo', 2)
    state = torch.load(part / 'training_states' / '2.state', weights_only=True)
    assert len(state['extra']['rng_ranks']) == 2
    assert not torch.equal(state['extra']['rng_ranks'][0]['torch'], state['extra']['rng_ranks'][1]['torch'])
    _train(assets, tmp_path / 'part', 'grpo', 4, '--auto_resume')
    log = open(sorted(glob.glob(str(part / 'train_*.log')))[-1]).read()
    assert 'Resuming training from epoch' in log and 'iter: 2.' in log
    a = torch.load(whole / 'models' / 'net_g_4.pth', weights_only=True)['params']
    b = torch.load(part / 'models' / 'net_g_4.pth', weights_only=True)['params']
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = torch.load(part / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert any(not torch.equal(a[k], start[k]) for k in a)  # iterations 3-4 changed the weights
