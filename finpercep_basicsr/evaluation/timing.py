"""Wall-clock time and peak memory of a block of work, on a CPU and on a CUDA GPU alike (the benchmarks' measures).

Peak memory (``PeakMemory``): ``peak`` is the block's growth, ``total`` the process's whole peak
during the block (weights already in memory included):
- CUDA: ``torch.cuda.max_memory_allocated`` during the block (``total``), minus the allocation
  before it (``peak``).
- CPU: the kernel's RSS high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` right
  before the block; ``total``), minus the RSS before it (``peak``). glibc keeps freed
  small blocks in the process, so RSS follows live tensor memory only when large tensors get their
  own mappings: ``rerun_with_tensor_sized_rss`` restarts a benchmark's process with
  ``MALLOC_MMAP_THRESHOLD_`` fixed for that.
"""
import gc
import os
import sys
import time

import torch

MMAP_ENV = 'MALLOC_MMAP_THRESHOLD_'


def median(values):
    """The middle value (the upper one of an even count), as every benchmark here reports."""
    return sorted(values)[len(values) // 2]


def synchronize(device):
    """Wait for the kernels queued on ``device`` (a no-op on a CPU), so a clock read after it is honest."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn, device=torch.device('cpu')):
    """``(fn(), seconds)``; on a CUDA device the clock stops once the queued kernels finished."""
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def rerun_with_tensor_sized_rss():
    """Without a CUDA GPU, re-execute this process (same command line) once with glibc's mmap threshold fixed.

    Large tensors (> 128 KiB) then live in their own mappings, and freed memory leaves the RSS, so CPU
    RSS peaks are tensor peaks. Returns at once on a GPU machine or in the re-executed process.
    """
    if not torch.cuda.is_available() and MMAP_ENV not in os.environ:
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, **{MMAP_ENV: '131072'}))


def run_memory_bench(bench, *args):
    """A memory benchmark's entry: re-execute for honest CPU peaks (``rerun_with_tensor_sized_rss``), then run
    ``bench(*args)``; bad input is one line on stderr and exit code 2.

    Returns:
        int: The process exit code.
    """
    from finpercep_basicsr.utils.errors import exit_code_for_user_errors
    rerun_with_tensor_sized_rss()
    return exit_code_for_user_errors(bench, *args)


def _status_mib(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError(f'no {key} in /proc/self/status')


class PeakMemory:
    """Peak memory of a ``with`` block in MiB: CUDA allocator on a GPU, kernel RSS high-water mark on CPU.

    Args:
        device (torch.device): Where the block allocates its tensors.

    Attributes:
        peak (float): Growth over what was in use when the block began.
        total (float): The whole peak during the block (CPU: peak RSS of the process; CUDA: peak allocated).
    """

    def __init__(self, device):
        self.cuda = device.type == 'cuda'
        self.peak = self.total = None

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2 ** 20
        else:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset VmHWM to the current RSS
            self.base = _status_mib('VmRSS')
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.total = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            self.total = _status_mib('VmHWM')
        self.peak = self.total - self.base
