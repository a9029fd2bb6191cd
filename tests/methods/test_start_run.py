import numpy as np
import torch

from robopref.config import StrictModel
from robopref.methods.common import start_run


class _Cfg(StrictModel):
    seed: int = 7
    num_threads: int | None = None


def test_start_run_saves_config_and_seeds(tmp_path):
    out, rng = start_run(_Cfg(), tmp_path / "a" / "b")
    assert (out / "config.yaml").read_text().strip().splitlines() == [
        "seed: 7",
        "num_threads: null",
    ]
    first = (rng.random(), np.random.random(), torch.rand(1).item())
    _, rng = start_run(_Cfg(), tmp_path / "c")
    assert (rng.random(), np.random.random(), torch.rand(1).item()) == first
    _, rng = start_run(_Cfg(seed=8), tmp_path / "d")
    assert rng.random() != first[0]
    before = torch.get_num_threads()
    try:
        start_run(_Cfg(num_threads=1), tmp_path / "e")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
