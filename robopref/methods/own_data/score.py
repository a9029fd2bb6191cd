"""``robopref score DATA --reward CKPT``: every episode's learned return, and a curated subset.

``keep_top = F`` keeps the best ``ceil(F * E)`` of the ``E`` episodes by learned return (ties:
the lower index first) and writes them, with the queries among them, to a new file (dataset
quality filtering). ``keep_failures`` keeps the other episodes too, flagged: their
``metadata["kept"]`` is False and the file's filter keys ``top`` / ``rest`` name both groups
(robomimic masks; LeRobot splits on export).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from robopref.data import DataValidationError, PreferenceQueries, TrajectoryDataset, save_dataset
from robopref.methods.common import RunResult
from robopref.methods.own_data.data import (
    check_reward_fits,
    fingerprint,
    load_reward_checkpoint,
    read_dataset,
    rewards_recorded,
)
from robopref.methods.own_data.relabel import check_target
from robopref.methods.own_data.results import score_result
from robopref.rewards.relabel import step_rewards

SHOWN = 30  # rows printed: the best SHOWN - 10 and the worst 10 episodes


def _subset_queries(q: PreferenceQueries | None, keep: np.ndarray) -> PreferenceQueries | None:
    if q is None:
        return None
    new_index = np.full(int(max(keep.max(initial=0), q.traj_index.max(initial=0))) + 1, -1)
    new_index[keep] = np.arange(len(keep))
    inside = np.all((new_index[q.traj_index] >= 0) | ~q.mask, axis=1)
    if not inside.any():
        return None
    sub = q.subset(np.flatnonzero(inside))
    sub.traj_index = np.where(sub.mask, new_index[sub.traj_index], 0)
    return sub


def curated(
    dataset: TrajectoryDataset, returns: np.ndarray, keep_top: float, keep_failures: bool
) -> tuple[TrajectoryDataset, np.ndarray]:
    """The curated dataset and a bool ``[E]``: which episodes made the cut."""
    E = len(dataset)
    order = np.argsort(-returns, kind="stable")
    top = np.zeros(E, dtype=bool)
    top[order[: max(1, math.ceil(keep_top * E))]] = True
    metadata = dict(dataset.metadata)
    if keep_failures:
        trajs = [
            dataclasses.replace(t, metadata={**t.metadata, "kept": bool(k)})
            for t, k in zip(dataset, top)
        ]
        keys = dict(metadata.get("filter_keys") or {})
        keys.update({"top": np.flatnonzero(top).tolist(), "rest": np.flatnonzero(~top).tolist()})
        metadata["filter_keys"] = keys
        return TrajectoryDataset(trajs, dataset.queries, metadata), top
    keep = np.flatnonzero(top)
    position = {int(i): j for j, i in enumerate(keep)}
    keys = {
        name: [position[i] for i in idx if i in position]
        for name, idx in (metadata.get("filter_keys") or {}).items()
    }
    keys = {name: idx for name, idx in keys.items() if idx}
    if keys:
        metadata["filter_keys"] = keys
    else:
        metadata.pop("filter_keys", None)
    trajs = [dataset[int(i)] for i in keep]
    return TrajectoryDataset(trajs, _subset_queries(dataset.queries, keep), metadata), top


def score(
    data: str,
    reward: str,
    keep_top: float | None = None,
    out: str | None = None,
    keep_failures: bool = False,
) -> RunResult:
    """Per-episode learned returns (and the curated file when ``out`` is given)."""
    if (keep_top is None) != (out is None):
        raise DataValidationError("score: --keep-top F and --out NEW go together")
    if keep_top is not None and not 0 < keep_top <= 1:
        raise DataValidationError(
            f"score: --keep-top: expected a share in (0, 1], found {keep_top}"
        )
    if keep_failures and out is None:
        raise DataValidationError("score: --keep-failures needs --keep-top F --out NEW")
    if out is not None:
        check_target(data, out)
    dataset = read_dataset(data)
    model, card = load_reward_checkpoint(reward)
    obs_key = check_reward_fits(model, card, dataset, reward, data)
    returns = np.array([r.sum() for r in step_rewards(model, dataset, obs_key, str(reward))])
    recorded = rewards_recorded(dataset)
    successes = all(t.metadata.get("successes_recorded", True) is not False for t in dataset)
    top = np.ones(len(dataset), dtype=bool)
    artefacts = {}
    if out is not None:
        new, top = curated(dataset, returns, keep_top, keep_failures)
        new.metadata["curation"] = {
            "reward_checkpoint": str(Path(reward).resolve()),
            "reward_sha256": fingerprint(reward),
            "source": str(Path(data).resolve()),
            "source_sha256": fingerprint(data),
            "keep_top": keep_top,
            "kept_failures": keep_failures,
        }
        save_dataset(new, out)
        artefacts["data"] = out
    order = np.argsort(-returns, kind="stable")
    rows = []
    for rank, i in enumerate(order, start=1):
        t = dataset[int(i)]
        rows.append(
            {
                "rank": rank,
                "episode": int(i),
                "task": t.task,
                "steps": len(t),
                "learned_return": float(returns[i]),
                "recorded_return": float(t.rewards.sum()) if recorded else None,
                "success": bool(t.success) if successes else None,
                "kept": bool(top[i]),
            }
        )
    shown = rows if len(rows) <= SHOWN else rows[: SHOWN - 10] + rows[-10:]
    note = f"{len(rows)} episodes" + (
        f"; showing the best {SHOWN - 10} and the worst 10" if len(shown) < len(rows) else ""
    )
    if out is not None:
        what = "kept, the rest flagged" if keep_failures else "written"
        note += f"; {int(top.sum())} {what} to {out}"
    result = score_result(rows, {"title": "score", "note": note}, artefacts)
    result.tables[0].rows = shown
    return result
