"""Shared test set-up: the repository root and tests/ on sys.path, CPU-only, quiet threads."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, 'tests')):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture
def fgr_folder(tmp_path):
    """A tiny FGR folder (4 samples of 32x32) in a temporary directory."""
    from fgr_fixture import make_fgr_folder
    return make_fgr_folder(str(tmp_path / 'fgr'))


@pytest.fixture
def one_thread():
    """Tiny models run several times faster on one thread than with threads fighting for 2 cores."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
