"""SharedReference: a diffusion policy's frozen reference without a second copy of the base, equal to the deep copy."""
import pytest
import torch
from tests.helpers.diffusion import make_sd_folder, make_seesr_folder

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.archs.generator_policy import GeneratorPolicy
from finpercep_basicsr.archs.osediff_arch import FinPercepOSEDiffGenerator
from finpercep_basicsr.archs.seesr_arch import FinPercepSeeSRGenerator
from finpercep_basicsr.archs.shared_reference import SharedReference

pytestmark = pytest.mark.usefixtures('one_thread')
# the policy's loaded weights and a deep copy of them run the same kernels with rounding 1e-6 apart (the shared
# reference equals the policy itself exactly)
ATOL = 1e-5


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('shared_reference')
    return {'sd': make_sd_folder(str(root / 'sd')),
            'seesr': make_seesr_folder(str(root / 'seesr'), image_attention=False)}


def _policy(kind, assets):
    torch.manual_seed(0)
    if kind == 'osediff':  # trains conv_in next to its adapters
        return FinPercepOSEDiffGenerator(assets['sd'], prompt='a photo', explore_sigma=0.1)
    return FinPercepSeeSRGenerator(assets['sd'], assets['seesr'], num_steps=2, prompt='a photo', rollout_eta=1.0,
                                   controlnet_lora=True)


def _seeded(fn, seed=3):
    """``fn()`` from a fixed global RNG state, and the next draw after it (the stream it left)."""
    torch.manual_seed(seed)
    out = fn()
    return out, torch.rand(4)


def _train(policy, lq, steps=2):
    policy.train()
    optim = torch.optim.Adam(policy.trainable_parameters(), lr=0.05)
    for _ in range(steps):
        optim.zero_grad()
        policy(lq, grad_steps=1).mean().backward()
        optim.step()


def _assert_like_copy(shared, copy, policy, lq):
    out, after = _seeded(lambda: shared(lq, grad_steps=0))
    expected, expected_after = _seeded(lambda: copy(lq, grad_steps=0))
    assert torch.allclose(out, expected, atol=ATOL) and torch.equal(after, expected_after)  # same noise drawn
    assert not out.requires_grad and policy.training  # no graph, the policy's mode is back
    trajectory = policy.sample_trajectory(lq)
    assert torch.allclose(shared.log_prob(trajectory), copy.log_prob(trajectory), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize('kind', ['osediff', 'seesr'])
def test_shared_reference_equals_the_deep_copy_before_and_after_training(assets, kind):
    policy = _policy(kind, assets)
    shared, copy = policy.make_reference(), GeneratorPolicy.make_reference(policy)
    assert isinstance(shared, SharedReference) and shared.policy is policy
    lq = torch.rand(1, 3, 8, 8)
    policy.train()
    _assert_like_copy(shared, copy, policy, lq)
    start = policy.sample_no_grad(lq)
    _train(policy, lq)
    assert (policy.sample_no_grad(lq) - start).abs().max() > 1e-3  # the policy moved, the references did not
    _assert_like_copy(shared, copy, policy, lq)
    assert list(shared.weights_module().state_dict()) == policy.trainable_names()  # what net_g_ref.pth holds


def test_shared_reference_allocates_only_the_trained_tensors(assets):
    policy = _policy('osediff', assets)
    shared, copy = policy.make_reference(), GeneratorPolicy.make_reference(policy)
    params = dict(policy.named_parameters())
    policy_ptrs = {p.data_ptr() for p in params.values()}
    start = shared.start_tensors()
    trained = set(policy.trainable_names())
    # the reference's forward sees the policy's own base tensors and fresh copies of the trained ones
    seen = {n: start.get(n, p) for n, p in params.items()}
    frozen = [n for n in params if n not in trained]
    assert frozen and all(seen[n].data_ptr() == params[n].data_ptr() for n in frozen)
    assert all(seen[n].data_ptr() not in policy_ptrs for n in trained)
    assert not list(shared.parameters())
    def size(tensors):
        return sum(t.numel() * t.element_size() for t in tensors)
    # it holds the trained tensors and the buffers, nothing of the base
    assert size(shared.buffers()) == size(params[n] for n in trained) + size(policy.buffers())
    # the deep copy shares nothing
    assert not {p.data_ptr() for p in copy.parameters()} & policy_ptrs


def test_reference_of_tuned_adapters_is_the_tuned_start_not_the_base(assets):
    policy = _policy('osediff', assets)
    lq = torch.rand(1, 3, 8, 8)
    untuned = policy.sample_no_grad(lq)
    g = torch.Generator().manual_seed(1)
    tuned = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in policy.weights_module().state_dict().items()}
    policy.weights_module().load_state_dict(tuned)  # as path.pretrain_network_g does
    start = policy.sample_no_grad(lq)
    assert (start - untuned).abs().max() > 1e-3  # adapters switched off would be the untuned policy
    shared = policy.make_reference()
    _train(policy, lq)
    assert torch.equal(shared(lq, grad_steps=0), start)
    saved = shared.weights_module().state_dict()
    assert list(saved) == policy.trainable_names() and all(torch.equal(saved[k], v) for k, v in tuned.items())


def test_loading_the_reference_file_sets_the_start(assets):
    """Resume: ``net_g_ref.pth`` (the trained tensors at the start of the run) is loaded into a fresh reference."""
    policy = _policy('osediff', assets)
    lq = torch.rand(1, 3, 8, 8)
    first = policy.make_reference()
    saved = {k: v.clone() for k, v in first.weights_module().state_dict().items()}
    expected = first(lq, grad_steps=0)
    _train(policy, lq)
    resumed = policy.make_reference()  # made from the trained policy, as a resumed run does
    assert (resumed(lq, grad_steps=0) - expected).abs().max() > 1e-3
    resumed.weights_module().load_state_dict(saved)
    assert torch.equal(resumed(lq, grad_steps=0), expected)
    with pytest.raises(RuntimeError, match='missing'):
        resumed.weights_module().load_state_dict({})
