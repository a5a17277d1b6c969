"""Shared test fixtures (the repository root is on sys.path through pytest.ini's ``pythonpath``)."""
import pytest


@pytest.fixture
def fgr_folder(tmp_path):
    """A tiny FGR folder (4 samples of 32x32) in a temporary directory."""
    from tests.helpers.fgr import make_fgr_folder
    return make_fgr_folder(str(tmp_path / 'fgr'))


@pytest.fixture
def one_thread():
    """Tiny models run several times faster on one thread than with threads fighting for 2 cores."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
