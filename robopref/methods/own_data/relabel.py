"""Step ``relabel``: a learned reward's per-step rewards written into a new file.

In the new file (an ordinary robopref HDF5 file):

* ``Trajectory.rewards`` is the learned reward, normalised over every step of the data set:
  ``(raw - mean) / std``; what ``train-policy`` and ``export`` use;
* ``Trajectory.extras["learned_reward_raw"]``: the raw per-step learned reward;
* ``Trajectory.extras["original_rewards"]``: the source's own per-step rewards, absent when
  the source recorded none (a relabelled source passes its originals on);
* ``TrajectoryDataset.metadata["rewards_recorded"]`` (False for a reward-less source) is dropped:
  the file now has rewards;
* ``TrajectoryDataset.metadata["reward_source"]``: the learned reward's class, sizes and the
  normalisation;
* ``TrajectoryDataset.metadata["relabel"]``: provenance (checkpoint path and sha256, its card,
  source path and sha256, the normalisation).

The rewards come from :func:`robopref.rewards.relabel.relabel_dataset`, the same function
``export --reward`` uses, so ``export`` writes a relabelled file's learned reward as LeRobot's
``next.reward`` and the original as ``next.original_reward``. The source is never written
unless ``in_place`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robopref.data import DataValidationError, TrajectoryDataset, save_dataset
from robopref.methods.common import RunResult
from robopref.methods.own_data.config import RelabelConfig
from robopref.methods.own_data.data import (
    check_reward_fits,
    fingerprint,
    load_reward_checkpoint,
    read_dataset,
)
from robopref.methods.own_data.results import relabel_result
from robopref.rewards.relabel import relabel_dataset

Config = RelabelConfig


def check_target(data: str, out: str) -> None:
    """``out`` must be a new file path, not the source itself (nor a folder)."""
    src, dst = Path(data), Path(out)
    same = dst.exists() and src.exists() and os.path.samefile(src, dst)
    if same or src.resolve() == dst.resolve():
        raise DataValidationError(
            f"{out}: --out: expected a new file, found the source {data} itself (pass "
            "--in-place to write over the source); nothing was written"
        )
    if dst.is_dir():
        raise DataValidationError(f"{out}: --out: expected an HDF5 file path, found a directory")


def summary_row(source: TrajectoryDataset, new: TrajectoryDataset) -> dict:
    """What ``relabel`` prints: sizes, the raw reward's scale, its correlation with the
    original rewards where those were kept."""
    raw = [t.extras["learned_reward_raw"] for t in new]
    flat = np.concatenate(raw) if raw else np.zeros(0)
    originals = [t.extras["original_rewards"] for t in new if "original_rewards" in t.extras]
    corr = None
    if len(originals) == len(raw) and len(flat) > 1:
        orig = np.concatenate(originals)
        if orig.std() > 0 and flat.std() > 0:
            corr = float(np.corrcoef(orig, flat)[0, 1])
    return {
        "episodes": len(source),
        "steps": int(len(flat)),
        "raw_mean": float(flat.mean()) if len(flat) else 0.0,
        "raw_std": float(flat.std()) if len(flat) else 0.0,
        "original": "kept" if originals else "none recorded",
        "corr_original": corr,
    }


def run(config: RelabelConfig, out_dir: str | Path | None = None) -> RunResult:
    target = config.data if config.in_place else config.out
    if not config.in_place:
        check_target(config.data, target)
    dataset = read_dataset(config.data)
    model, card = load_reward_checkpoint(config.reward)
    obs_key = check_reward_fits(model, card, dataset, config.reward, config.data)
    provenance = {
        "reward_checkpoint": str(Path(config.reward).resolve()),
        "reward_sha256": fingerprint(config.reward),
        "card": card or None,
        "source": str(Path(config.data).resolve()),
        "source_sha256": fingerprint(config.data),
        "obs_key": obs_key,
    }
    new = relabel_dataset(
        dataset, model, provenance["reward_checkpoint"], obs_key, True, config.batch_size
    )
    kept = any("original_rewards" in t.extras for t in new)
    new.metadata["relabel"] = {
        **provenance,
        "normalisation": new.metadata["reward_source"]["normalisation"],
        "rewards": "normalised",
        "raw_key": "learned_reward_raw",
        "original_key": "original_rewards" if kept else None,
    }
    row = summary_row(dataset, new)
    save_dataset(new, target)
    return relabel_result(row, str(target))
