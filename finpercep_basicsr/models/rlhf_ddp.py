"""What a multi-process RLHF run needs beyond DDP's gradient all-reduce.

- Every rank's RNG state goes into the training state (rank 0 writes it), so that a resumed run
  draws the same noise and augmentations on every rank as the run it continues.
- At each checkpoint the ranks compare a checksum of their trainable weights: the file rank 0
  writes is the weights of every rank, or the run stops with an error.
"""
import torch
import torch.distributed as dist

from finpercep_basicsr.models.finpercep_base_model import _rng_state, _set_rng_state


def distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rng_states():
    """List of every rank's RNG state (rank order); a one-element list without DDP. Collective."""
    state = _rng_state()
    if not distributed():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def restore_rank_rng(states, rank, world_size):
    """Set this rank's RNG state from ``gather_rng_states``'s list; False if it was saved by another world size."""
    if not states or len(states) != world_size:
        return False
    _set_rng_state(states[rank])
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
