"""Benchmark of the FGR build (samples per minute) and of LMDB vs folder reading (items per second).

Builds the first samples of a build option file into a fresh folder and reports the end-to-end rate
(model loading, worker start-up, LMDB and contact sheet included), then reads the built set through
``FinPercepFGRDataset`` with the disk and the LMDB backend, full passes for about ``read_seconds``
each after one warm-up pass (so both read from the page cache).
"""
import os
import shutil
import tempfile
import time

from finpercep_basicsr.fgr.builder import build_fgr, load_build_options
from finpercep_basicsr.utils.errors import UserInputError


def read_rate(dataset, seconds):
    """Items per second over whole passes until ``seconds`` have elapsed (after one warm-up pass)."""
    for i in range(len(dataset)):
        dataset[i]
    items, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(len(dataset)):
            dataset[i]
        items += len(dataset)
    return items / (time.perf_counter() - start)


def run_build_bench(opt_path, samples=8, photos=None, num_workers=None, out=None, read_seconds=3.0):
    """Build, then read, printing one line each (``scripts/bench_fgr.py``).

    Args:
        opt_path (str): Build option file (``options/data/fgr_build_*.yml``).
        samples (int): Samples to build (rounded up to whole crops).
        photos (list[str] | None): Override ``photos.folders``.
        num_workers (int | None): Override ``num_workers``.
        out (str | None): Build folder, which must not exist (default: a temporary folder, removed afterwards).
        read_seconds (float): Time per read backend.

    Returns:
        dict: ``build`` (the build summary) and ``read`` (backend -> items per second).

    Raises:
        UserInputError: ``out`` exists, or bad build options.
    """
    import torch

    from finpercep_basicsr.data.finpercep_fgr_dataset import FinPercepFGRDataset
    torch.set_num_threads(1)
    opt = load_build_options(opt_path, num_workers=num_workers)
    if photos:
        opt['photos']['folders'] = photos
    if out and os.path.exists(out):
        raise UserInputError(f'{out} exists; the benchmark needs a fresh folder')
    root = out or tempfile.mkdtemp(prefix='bench_fgr_')
    opt.update(dataroot=root, max_samples=samples, contact_sheet={'num': 4, 'tile': 128})
    try:
        summary = build_fgr(opt, progress=False)
        sources = ', '.join(s.get('name', s['type']) for s in opt['sr_sources'])
        print(f'build: {summary["built_now"]} samples of {opt["photos"]["crop_size"]} px with '
              f'{len(opt["sr_sources"])} SR sources ({sources}), '
              f'num_workers={opt.get("num_workers", 0)}, in {summary["seconds"]:.1f} s -> '
              f'{summary["samples_per_minute"]:.1f} samples/min (end to end)')
        rates = {}
        for backend in ('disk', 'lmdb'):
            dataset = FinPercepFGRDataset({'dataroot': root, 'phase': 'val', 'io_backend': {'type': backend}})
            rates[backend] = read_rate(dataset, read_seconds)
        print(f'read ({len(dataset)} items, 5 PNGs each, decode included): folder {rates["disk"]:.1f} items/s, '
              f'LMDB {rates["lmdb"]:.1f} items/s, LMDB/folder = {rates["lmdb"] / rates["disk"]:.2f}')
    finally:
        if not out:
            shutil.rmtree(root, ignore_errors=True)
    return {'build': summary, 'read': rates}
