"""CPU-safe replacements for the two BasicSR start-up functions that assume CUDA.

Upstream ``load_resume_state`` maps the state onto ``torch.cuda.current_device()`` and looks for
states under a cwd-relative ``experiments/`` folder; upstream ``init_dist`` always asks for NCCL and
calls ``torch.cuda.set_device``. Both crash on a machine without a GPU.
"""
import os

import torch
import torch.distributed as dist
from basicsr.utils import check_resume

from finpercep_basicsr.utils.checkpoint import load_checkpoint
from finpercep_basicsr.utils.checkpoint_retention import numbered_training_states


def latest_training_state(states_dir):
    """Path of the highest-iteration ``<iter>.state`` in ``states_dir``, or None."""
    states = numbered_training_states(states_dir)
    return states[max(states)][0] if states else None


def load_resume_state(opt):
    """Load the state to resume from (``--auto_resume`` or ``path.resume_state``) on the CPU.

    Args:
        opt (dict): Parsed options (``opt['path']['training_states']`` must be set).

    Returns:
        dict | None: The training state, or None for a fresh run.
    """
    if opt['auto_resume']:
        path = latest_training_state(opt['path']['training_states'])
        if path is not None:
            opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if path is None:
        return None
    state = load_checkpoint(path, what='resume state')
    check_resume(opt, state['iter'])
    return state


def init_dist(launcher, backend=None, **kwargs):
    """Initialise ``torch.distributed`` for torchrun: NCCL with CUDA, gloo without.

    Args:
        launcher (str): Only ``'pytorch'`` (torchrun / torch.distributed.launch) is supported here.
        backend (str | None): Force a backend; by default chosen from CUDA availability.
    """
    if launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} is not supported by finpercep_basicsr.train; use --launcher pytorch')
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend == 'nccl':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', os.environ['RANK'])) % torch.cuda.device_count())
    dist.init_process_group(backend=backend, **kwargs)


def install():
    """Point BasicSR's train/test pipelines at the CPU-safe functions above."""
    import basicsr.train
    import basicsr.utils.options

    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.options.init_dist = init_dist
