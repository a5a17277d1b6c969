"""Checkpoints: atomic writes survive a failed save; bad or mismatched files get clear errors."""
import os

import pytest
import torch

from finpercep_basicsr.utils.checkpoint import CheckpointMismatchError, describe_state_dict_mismatch
from finpercep_basicsr.utils.checkpoint import atomic_torch_save, load_checkpoint
from finpercep_basicsr.utils.checkpoint_retention import check_keep_checkpoints, prune_checkpoints
from finpercep_basicsr.utils.errors import UserInputError


class _Unpicklable:

    def __reduce__(self):
        raise RuntimeError('disk full (simulated)')


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = str(tmp_path / 'net.pth')
    atomic_torch_save({'params': {'w': torch.ones(3)}}, path)
    with pytest.raises(RuntimeError, match='disk full'):
        atomic_torch_save({'params': {'w': torch.zeros(3)}, 'bad': _Unpicklable()}, path)
    assert torch.equal(load_checkpoint(path)['params']['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['net.pth']  # no temporary file left behind


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / 'net.pth'
    atomic_torch_save({'params': {'w': torch.ones(100)}}, str(path))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserInputError, match=f'cannot read checkpoint {path}'):
        load_checkpoint(str(path))


def test_mismatch_lists_missing_unexpected_and_shape_keys():
    net = {'a.weight': torch.zeros(4, 3), 'b.weight': torch.zeros(2), 'c.bias': torch.zeros(1)}
    loaded = {'a.weight': torch.zeros(4, 5), 'b.weight': torch.zeros(2), 'd.bias': torch.zeros(1)}
    assert describe_state_dict_mismatch(net, loaded) == [
        'missing keys: c.bias', 'unexpected keys: d.bias', 'shape of a.weight: network (4, 3), checkpoint (4, 5)']
    assert issubclass(CheckpointMismatchError, UserInputError)


def test_keep_checkpoints_prunes_only_old_numbered_files(tmp_path):
    models, states = tmp_path / 'models', tmp_path / 'states'
    models.mkdir()
    states.mkdir()
    for it in (10, 20, 30):
        for name in (f'net_g_{it}.pth', f'net_d_{it}.pth'):
            (models / name).write_bytes(b'x')
        (states / f'{it}.state').write_bytes(b'x')
    for name in ('net_g_latest.pth', 'net_reward_best_srcc.pth', 'net_g_ref.pth', 'notes.txt'):
        (models / name).write_bytes(b'x')
    assert prune_checkpoints(str(models), str(states), None) == []
    deleted = prune_checkpoints(str(models), str(states), 2)
    assert deleted == sorted(str(p) for p in (models / 'net_g_10.pth', models / 'net_d_10.pth', states / '10.state'))
    assert sorted(os.listdir(models)) == ['net_d_20.pth', 'net_d_30.pth', 'net_g_20.pth', 'net_g_30.pth',
                                          'net_g_latest.pth', 'net_g_ref.pth', 'net_reward_best_srcc.pth', 'notes.txt']
    assert sorted(os.listdir(states)) == ['20.state', '30.state']


@pytest.mark.parametrize('bad', [0, -1, 1.5, True, 'all'])
def test_keep_checkpoints_rejects_bad_values_naming_the_key(bad):
    with pytest.raises(UserInputError, match='logger.keep_checkpoints'):
        check_keep_checkpoints({'logger': {'keep_checkpoints': bad}})
    assert check_keep_checkpoints({'logger': {'keep_checkpoints': 3}}) == 3
    assert check_keep_checkpoints({'logger': {}}) is None
