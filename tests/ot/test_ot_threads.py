"""The Numba engine must not change torch's intra-op thread count (its OpenMP layer used to)."""

import subprocess
import sys

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


FORKED_WORKER = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor

import torch  # noqa: F401

import robopref.cli  # what `robopref bench` has loaded before it forks its workers


def threads(out_dir):
    import numba, torch
    from robopref.methods.common import start_run
    from robopref.methods.pearl import Config

    start_run(Config(source={"tasks": ["reach-v3"]}, target={"tasks": ["reach-v3"]},
                     num_threads=1), out_dir)
    return numba.get_num_threads(), torch.get_num_threads()


if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        print(pool.submit(threads, sys.argv[1]).result())
"""


@needs_two
def test_start_run_pins_numba_and_torch_threads_in_a_forked_worker(tmp_path):
    """As in `robopref bench`: a worker forked from a fresh parent (subprocess: clean state)."""
    script = tmp_path / "worker.py"
    script.write_text(FORKED_WORKER)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "(1, 1)"
