"""What every recipe does before its work: the run folder, the saved config, threads, seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robopref.config import StrictModel, save_config
from robopref.utils import seed_everything


def start_run(config: StrictModel, out_dir: str | Path) -> tuple[Path, np.random.Generator]:
    """Create ``out_dir``, save ``config`` as ``out_dir/config.yaml``, apply the config's
    ``num_threads`` (torch intra-op threads, when set) and seed Python, numpy and torch with its
    ``seed`` (0 when it has none). Returns ``(out_dir, rng)``, ``rng`` a generator of that seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    num_threads = getattr(config, "num_threads", None)
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    return out_dir, seed_everything(getattr(config, "seed", 0))
