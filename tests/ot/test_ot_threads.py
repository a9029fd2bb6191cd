"""The Numba engine must not change torch's intra-op thread count (its OpenMP layer used to)."""

import numba
import numpy as np
import pytest
import torch

from robopref import ot

needs_two = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="needs Numba with >= 2 threads (>= 2 cores)"
)


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_two
def test_numba_engine_keeps_torch_threads(one_torch_thread):
    x = np.random.default_rng(0).random((200, 5))
    C = ((x[:, None] - x[None]) ** 2).sum(-1)
    ot.entropic_gromov_wasserstein(C, C, eps=0.05)  # runs Numba's parallel (OpenMP) kernels
    assert torch.get_num_threads() == 1


def test_start_run_pins_numba_threads_too(one_torch_thread, tmp_path):
    from robopref.methods.common import start_run
    from robopref.methods.pearl import Config

    before = numba.get_num_threads()
    config = Config(source={"tasks": ["reach-v3"]}, target={"tasks": ["reach-v3"]}, num_threads=1)
    try:
        start_run(config, tmp_path)
        assert (numba.get_num_threads(), torch.get_num_threads()) == (1, 1)
    finally:
        numba.set_num_threads(before)
