"""``rlhf.trainable``: partial fine-tuning trains only the matching parameters, backward stops before them."""
from copy import deepcopy

import pytest
import torch
from tests.helpers.rlhf import build_rlhf_model, make_paired_folder, make_reward_checkpoint, random_batch

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.utils.checkpoint import CheckpointMismatchError
from finpercep_basicsr.utils.errors import UserInputError

# the tail of the tiny RRDBNet: one pattern of each syntax
TAIL = ['conv_up2.*', r're:conv_(hr|last)\..*']
TAIL_NAMES = ['conv_up2.weight', 'conv_up2.bias', 'conv_hr.weight', 'conv_hr.bias', 'conv_last.weight',
              'conv_last.bias']


@pytest.fixture
def setup(tmp_path, one_thread):
    return tmp_path, make_paired_folder(tmp_path / 'data'), make_reward_checkpoint(tmp_path / 'rm.pth')


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _graph_nodes(tensor):
    """Every autograd node that backward from ``tensor`` would visit."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return seen


def test_only_matching_parameters_train_and_the_rest_stays_bit_identical(setup):
    tmp_path, data, rm = setup
    model = build_rlhf_model(tmp_path, data, rm, rlhf={'trainable': TAIL})
    net = model.net_g.weights_module()
    assert model.trainable_names == TAIL_NAMES
    assert [n for n, p in net.named_parameters() if p.requires_grad] == TAIL_NAMES
    optimised = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert optimised == {id(p) for n, p in net.named_parameters() if n in TAIL_NAMES}

    start, ref_start = _state(net), _state(model.net_ref.weights_module())
    model.feed_data(random_batch())
    for it in (1, 2):
        model.optimize_parameters(it)
    after, ema = _state(net), _state(model.net_g_ema.weights_module())
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed == set(TAIL_NAMES)
    assert all(p.grad is None for n, p in net.named_parameters() if n not in TAIL_NAMES)
    # the EMA averages the trained tensors and holds the frozen ones exactly
    assert all(torch.equal(ema[k], start[k]) for k in start if k not in TAIL_NAMES)
    assert all(not torch.equal(ema[k], start[k]) and not torch.equal(ema[k], after[k]) for k in TAIL_NAMES)
    assert all(torch.equal(v, ref_start[k]) for k, v in _state(model.net_ref.weights_module()).items())

    model.save(0, 2)  # the checkpoint holds the whole generator, loadable in any BasicSR tool
    saved = torch.load(tmp_path / 'models' / 'net_g_2.pth', weights_only=True)
    assert saved['params'].keys() == start.keys() == saved['params_ema'].keys()
    assert all(torch.equal(saved['params'][k], start[k]) for k in start if k not in TAIL_NAMES)


def test_backward_does_not_reach_the_frozen_early_layers(setup):
    tmp_path, data, rm = setup
    partial = build_rlhf_model(tmp_path / 'p', data, rm, rlhf={'trainable': TAIL}, train__ema_decay=0)
    net = partial.net_g.weights_module()
    requires_grad, backward_calls = {}, {}

    def watch(module, inputs, out, name):
        """Record whether the output is in the graph; count the gradients that arrive at it."""
        requires_grad[name] = out.requires_grad
        if out.requires_grad:
            out.register_hook(lambda grad: backward_calls.__setitem__(name, backward_calls.get(name, 0) + 1))
    for name in ('conv_first', 'body', 'conv_body', 'conv_up1', 'conv_up2', 'conv_last'):
        getattr(net, name).register_forward_hook(lambda m, i, out, name=name: watch(m, i, out, name))
    partial.feed_data(random_batch())
    partial.optimize_parameters(1)
    assert requires_grad == {'conv_first': False, 'body': False, 'conv_body': False, 'conv_up1': False,
                             'conv_up2': True, 'conv_last': True}
    assert backward_calls == {'conv_up2': 1, 'conv_last': 1}  # no gradient was computed before conv_up2

    # the graph of the output holds the three trained convolutions and, as leaves, only their parameters
    sr = partial.net_g(partial.lq)
    nodes = _graph_nodes(sr)
    convs = [n for n in nodes if 'Convolution' in type(n).__name__]
    leaves = {id(n.variable) for n in nodes if hasattr(n, 'variable')}
    assert len(convs) == 3
    assert leaves == {id(p) for n, p in net.named_parameters() if n in TAIL_NAMES}
    full = build_rlhf_model(tmp_path / 'f', data, rm, train__ema_decay=0)
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in full.net_g.modules())
    assert len([n for n in _graph_nodes(full.net_g(partial.lq)) if 'Convolution' in type(n).__name__]) == n_convs


@pytest.mark.parametrize('patterns, message', [
    (['conv_lats.*'], "rlhf.trainable: 'conv_lats.*' matches no parameter of RRDBNet; its 42 parameters include "
                      "conv_last.bias"),
    (['conv_last.*', 're:body\\.7\\..*'], "'re:body\\\\.7\\\\..*' matches no parameter of RRDBNet"),
    (['re:conv_(last'], "rlhf.trainable: 're:conv_(last' is not a valid regular expression"),
    ([], 'rlhf.trainable is an empty list'),
])
def test_a_pattern_that_matches_nothing_is_a_clear_error(setup, patterns, message):
    tmp_path, data, rm = setup
    with pytest.raises(UserInputError) as err:
        build_rlhf_model(tmp_path, data, rm, rlhf={'trainable': patterns})
    assert message in str(err.value) and '\n' not in str(err.value)
    assert 'conv_first.weight' in str(err.value) or 'regular expression' in str(err.value) or not patterns


def test_resume_with_trainable_continues_exactly_and_refuses_another_selection(setup):
    tmp_path, data, rm = setup
    model = build_rlhf_model(tmp_path, data, rm, rlhf={'trainable': TAIL})
    batch = random_batch()
    model.feed_data(batch)
    for it in (1, 2):
        model.optimize_parameters(it)
    model.save(0, 2)
    model.optimize_parameters(3)
    expected = deepcopy(model.net_g_ema.state_dict()), deepcopy(model.net_g.state_dict())
    state = torch.load(tmp_path / 'states' / '2.state', weights_only=True)
    assert state['extra']['trainable'] == TAIL_NAMES

    resumed_opts = dict(path__pretrain_network_g=str(tmp_path / 'models' / 'net_g_2.pth'),
                        path__resume_state=str(tmp_path / 'states' / '2.state'))
    resumed = build_rlhf_model(tmp_path, data, rm, rlhf={'trainable': TAIL}, **resumed_opts)
    resumed.resume_training(state)
    resumed.feed_data(batch)
    resumed.optimize_parameters(3)
    for a, b in zip(expected, (resumed.net_g_ema.state_dict(), resumed.net_g.state_dict())):
        assert all(torch.equal(a[k], b[k]) for k in a)

    other = build_rlhf_model(tmp_path, data, rm, rlhf={'trainable': ['conv_last.*']}, **resumed_opts)
    with pytest.raises(CheckpointMismatchError, match='rlhf.trainable now selects 2 .*conv_hr.bias'):
        other.resume_training(state)


def test_frozen_parameters_are_not_in_ddp_gradient_sync(setup):
    import torch.distributed as dist
    tmp_path, data, rm = setup
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        model = build_rlhf_model(tmp_path, data, rm, rlhf={'trainable': TAIL}, dist=True)
        assert isinstance(model.net_g, torch.nn.parallel.DistributedDataParallel)
        # DDP's reducer holds only the trained tensors (its buckets are sized for them alone)
        logged = model.net_g._get_ddp_logging_data()
        assert logged['num_parameter_tensors'] == len(TAIL_NAMES)
        assert logged['total_parameter_size_bytes'] == 4 * sum(
            p.numel() for n, p in model.net_g.module.weights_module().named_parameters() if n in TAIL_NAMES)
        model.feed_data(random_batch())
        model.optimize_parameters(1)
        assert model.nonfinite_skips == 0
    finally:
        dist.destroy_process_group()
