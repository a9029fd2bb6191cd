"""Step ``relabel``: a learned reward's per-step rewards written into a new file.

In the new file (an ordinary robopref HDF5 file):

* ``Trajectory.rewards`` is the learned reward, normalised over every step of the data set:
  ``(raw - mean) / std``; what ``train-policy`` and ``export`` use;
* ``Trajectory.metadata["learned_reward_raw"]``: the raw per-step learned reward;
* ``Trajectory.metadata["original_rewards"]``: the source's own per-step rewards, absent when
  the source recorded none (a relabelled source passes its originals on);
* ``TrajectoryDataset.metadata["rewards_recorded"]`` (False for a reward-less source) is dropped:
  the file now has rewards;
* ``TrajectoryDataset.metadata["reward_source"]``: the learned reward's class and sizes;
* ``TrajectoryDataset.metadata["relabel"]``: provenance (checkpoint path and sha256, its card,
  source path and sha256, the normalisation).

The source is never written unless ``in_place`` is set.
"""

from __future__ import annotations

import dataclasses
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
    step_rewards,
)
from robopref.methods.own_data.results import relabel_result

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


def relabel_dataset(
    dataset: TrajectoryDataset, model, obs_key: str, provenance: dict, batch_size: int = 65536
) -> tuple[TrajectoryDataset, dict]:
    """The relabelled copy of ``dataset`` and a summary row (see the module docstring)."""
    raw = step_rewards(model, dataset, obs_key, batch_size)
    flat = np.concatenate(raw) if raw else np.zeros(0)
    mean, std = float(flat.mean()), float(flat.std())
    scale = std if std > 1e-12 else 1.0  # a constant reward stays constant (zero)
    recorded = dataset.metadata.get("rewards_recorded", True) is not False
    was_relabelled = bool(dataset.metadata.get("relabel"))
    trajectories, originals = [], []
    for t, r in zip(dataset, raw):
        meta = dict(t.metadata)
        if was_relabelled:
            original = meta.get("original_rewards")  # the source's, not the previous learned
        else:
            original = t.rewards.tolist() if recorded else None
        meta.pop("original_rewards", None)
        if original is not None:
            meta["original_rewards"] = original
            originals.append(np.asarray(original))
        meta["learned_reward_raw"] = r.tolist()
        trajectories.append(
            dataclasses.replace(t, rewards=(r - mean) / scale, metadata=meta)  # type: ignore[arg-type]
        )
    metadata = {k: v for k, v in dataset.metadata.items() if k != "rewards_recorded"}
    metadata["relabel"] = {
        **provenance,
        "normalisation": {"mean": mean, "std": scale},
        "rewards": "normalised",
        "raw_key": "learned_reward_raw",
        "original_key": "original_rewards" if originals else None,
    }
    metadata["reward_source"] = {
        "kind": "learned",
        "checkpoint": provenance.get("reward_checkpoint", ""),
        "model_class": type(model).__name__,
        "obs_dim": int(model.obs_dim),
        "act_dim": int(model.act_dim),
    }
    out = TrajectoryDataset(trajectories, dataset.queries, metadata)
    corr = None
    if len(originals) == len(raw) and len(flat) > 1:
        orig = np.concatenate(originals)
        if orig.std() > 0 and std > 0:
            corr = float(np.corrcoef(orig, flat)[0, 1])
    row = {
        "episodes": len(dataset),
        "steps": int(len(flat)),
        "raw_mean": mean,
        "raw_std": std,
        "original": "kept" if originals else "none recorded",
        "corr_original": corr,
    }
    return out, row


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
    new, row = relabel_dataset(dataset, model, obs_key, provenance, config.batch_size)
    save_dataset(new, target)
    return relabel_result(row, str(target))
