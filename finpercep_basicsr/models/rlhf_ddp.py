"""What a multi-process RLHF run needs beyond DDP's gradient all-reduce.

- The step draws its sampling noise from its own RNG stream (``NoiseStream``), apart from the
  global one that BasicSR's data loading also draws from (a resumed run creates one more loader
  iterator than an uninterrupted one, which would shift a shared stream).
- Every rank's RNG states (global and noise) go into the training state (rank 0 writes it), so a
  resumed run draws the same noise and augmentations on every rank as the run it continues.
- At each checkpoint the ranks compare a checksum of their trainable weights: the file rank 0
  writes is the weights of every rank, or the run stops with an error.
"""
from contextlib import contextmanager

import torch
import torch.distributed as dist

from finpercep_basicsr.models.finpercep_base_model import _rng_state, _set_rng_state


def distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class NoiseStream:
    """A torch RNG stream (CPU, and the model's CUDA device) that ``active()`` swaps in and out.

    Args:
        seed (int): Seed of the stream (give each rank its own).
        device (torch.device): The model's device.
    """

    def __init__(self, seed, device):
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=self._devices()):
            torch.default_generator.manual_seed(int(seed))
            if self._devices():
                torch.cuda.manual_seed(int(seed))
            self.state = self._get()

    def _devices(self):
        return [self.device] if self.device.type == 'cuda' else []

    def _get(self):
        return {'cpu': torch.get_rng_state(),
                'cuda': torch.cuda.get_rng_state(self.device) if self._devices() else None}

    def _set(self, state):
        torch.set_rng_state(state['cpu'])
        if self._devices() and state.get('cuda') is not None:
            torch.cuda.set_rng_state(state['cuda'], self.device)

    @contextmanager
    def active(self):
        """Draw from this stream inside the block; the global RNG is as before afterwards."""
        with torch.random.fork_rng(devices=self._devices()):
            self._set(self.state)
            try:
                yield
            finally:
                self.state = self._get()


def gather_rng_states(noise=None):
    """List of every rank's RNG states (rank order; ``noise``: a ``NoiseStream`` state added). Collective."""
    state = dict(_rng_state(), noise=noise)
    if not distributed():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def restore_rank_rng(states, rank, world_size, noise=None):
    """Set this rank's RNG states from ``gather_rng_states``'s list (and ``noise``'s state).

    Returns:
        bool: False when the states were saved by another world size (nothing is set).
    """
    if not states or len(states) != world_size:
        return False
    _set_rng_state(states[rank])
    if noise is not None and states[rank].get('noise') is not None:
        noise.state = states[rank]['noise']
    return True


def weights_checksum(state_dict):
    """(2,) float64: sum and sum of squares of every floating tensor (order-independent, cheap)."""
    total = torch.zeros(2, dtype=torch.float64)
    for v in state_dict.values():
        if v.is_floating_point():
            v = v.detach().double().cpu()
            total += torch.stack([v.sum(), (v * v).sum()])
    return total


def check_ranks_agree(state_dict, device):
    """Raise if the trainable weights differ between ranks; returns the number of ranks compared. Collective."""
    if not distributed():
        return 1
    local = weights_checksum(state_dict).to(device)
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f'trainable weights differ between ranks (checksums from {low.tolist()} to '
                           f'{high.tolist()}): the checkpoint would hold rank 0 only')
    return dist.get_world_size()
