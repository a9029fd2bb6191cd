"""What is in a dataset: per-task counts, success rates and returns, and the preference labels.

:func:`summarize` returns plain JSON-serialisable Python values (used by ``robopref info FILE
--json`` and written to ``results.json``); :func:`format_summary` turns that dict into a
``rich`` table for the terminal.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from robopref.data.queries import PreferenceQueries
from robopref.data.trajectory import TrajectoryDataset


def _success_known(t) -> bool:
    return t.metadata.get("successes_recorded", True) is not False


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(dataset: TrajectoryDataset) -> dict[str, Any]:
    """Summary of ``dataset`` as a JSON-serialisable dict.

    Keys:
        ``num_trajectories``, ``num_steps``;
        ``success_rate``: fraction of trajectories solved at any step (None when the file
        recorded no success flags, e.g. a robomimic file);
        ``mean_return``: mean undiscounted episode return (None for an empty dataset);
        ``act_dim``; ``observations``: {key: [per-step shape..., dtype]} (key ``"state"`` for
        array observations);
        ``tasks``: {task: {episodes, steps, success_rate, mean_return, mean_length, modes}}
        (``modes`` counts ``metadata["mode"]``, e.g. expert/noisy/random, when present);
        ``queries``: None or {num_queries, k, label_kind, teacher, seed, segment_lengths,
        mean_confidence, label_counts}. ``label_counts`` has ``preferred_item`` (``[K]``
        number of queries whose strictly most preferred item is item k), ``ties`` (queries
        whose best score is shared; soft pairs with y = 0.5) and ``unlabelled``.
    """
    trajs = dataset.trajectories
    by_task: dict[str, list] = {}
    for t in trajs:
        by_task.setdefault(t.task, []).append(t)
    tasks = {}
    for task in sorted(by_task):
        ts = by_task[task]
        known = all(_success_known(t) for t in ts)
        modes = Counter(str(t.metadata["mode"]) for t in ts if "mode" in t.metadata)
        tasks[task] = {
            "episodes": len(ts),
            "steps": int(sum(len(t) for t in ts)),
            "success_rate": _mean([float(t.success) for t in ts]) if known else None,
            "mean_return": _mean([t.episode_return for t in ts]),
            "mean_length": _mean([float(len(t)) for t in ts]),
            "modes": dict(sorted(modes.items())),
        }
    known = bool(trajs) and all(_success_known(t) for t in trajs)
    observations: dict[str, list] = {}
    if trajs:
        first = trajs[0]
        obs = (
            first.observations
            if isinstance(first.observations, dict)
            else {"state": first.observations}
        )
        observations = {k: [*map(int, v.shape[1:]), str(v.dtype)] for k, v in obs.items()}
    return {
        "num_trajectories": len(trajs),
        "num_steps": int(sum(len(t) for t in trajs)),
        "success_rate": _mean([float(t.success) for t in trajs]) if known else None,
        "mean_return": _mean([t.episode_return for t in trajs]),
        "act_dim": int(trajs[0].actions.shape[1]) if trajs else None,
        "observations": observations,
        "tasks": tasks,
        "queries": summarize_queries(dataset.queries) if dataset.queries is not None else None,
    }


def summarize_queries(queries: PreferenceQueries) -> dict[str, Any]:
    """The ``queries`` part of :func:`summarize` (see there)."""
    Q, K = queries.num_queries, queries.k
    preferred = np.zeros(K, dtype=np.int64)
    ties = unlabelled = 0
    if queries.label_kind == "none":
        unlabelled = Q
    elif queries.label_kind == "soft_pair":
        y = queries.labels[:, 0]
        preferred[0], preferred[1] = int((y > 0.5).sum()), int((y < 0.5).sum())
        ties = int((y == 0.5).sum())
    else:
        lab = np.where(queries.mask, queries.labels, -np.inf)
        unl = np.isnan(lab).all(1) if Q else np.zeros(0, dtype=bool)
        best = lab.max(1) if Q else np.zeros(0)
        shared = (lab == best[:, None]).sum(1) > 1
        unlabelled = int(unl.sum())
        ties = int((shared & ~unl).sum())
        winners = np.argmax(lab, axis=1)[~shared & ~unl] if Q else np.zeros(0, dtype=np.int64)
        preferred = np.bincount(winners, minlength=K)
    return {
        "num_queries": Q,
        "k": K,
        "label_kind": queries.label_kind,
        "teacher": queries.teacher,
        "seed": int(queries.seed),
        "segment_lengths": sorted({int(h) for h in queries.length[queries.mask]}),
        "mean_confidence": float(queries.confidence.mean()) if Q else None,
        "label_counts": {
            "preferred_item": [int(c) for c in preferred],
            "ties": ties,
            "unlabelled": unlabelled,
        },
    }


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_summary(summary: dict[str, Any]):
    """A ``rich.table.Table`` of :func:`summarize`'s dict: one row per task (episodes, steps,
    success rate, mean return, episode modes) and a total row; the queries are
    described in the caption. Print it with ``rich.console.Console().print``."""
    from rich.table import Table

    obs = "\n".join(
        f"obs/{k} [{', '.join(map(str, v[:-1]))}] {v[-1]}"
        for k, v in summary["observations"].items()
    )
    title = (
        f"{summary['num_trajectories']} trajectories, {summary['num_steps']} steps, "
        f"act_dim {summary['act_dim']}" + (f"\n{obs}" if obs else "")
    )
    table = Table(title=title, caption=_queries_caption(summary.get("queries")))
    table.add_column("task", no_wrap=True)
    for name in ("episodes", "steps", "success", "return"):
        table.add_column(name, justify="right")
    table.add_column("modes", no_wrap=True)
    for task, s in summary["tasks"].items():
        modes = "\n".join(f"{m}={n}" for m, n in s.get("modes", {}).items())
        table.add_row(
            task or "(no task)",
            str(s["episodes"]),
            str(s["steps"]),
            _fmt(s["success_rate"], ".2f"),
            _fmt(s["mean_return"], ".2f"),
            modes,
        )
    if len(summary["tasks"]) > 1:
        table.add_section()
        table.add_row(
            "all",
            str(summary["num_trajectories"]),
            str(summary["num_steps"]),
            _fmt(summary["success_rate"], ".2f"),
            _fmt(summary["mean_return"], ".2f"),
            "",
        )
    return table


def _queries_caption(q: dict[str, Any] | None) -> str:
    if q is None:
        return "no preference queries"
    counts = q["label_counts"]
    parts = [
        f"{q['num_queries']} queries of K={q['k']}, segments of "
        f"{', '.join(map(str, q['segment_lengths'])) or '-'} steps",
        f"labels: {q['label_kind']}"
        + (f" by '{q['teacher']}' (seed {q['seed']})" if q["teacher"] else ""),
    ]
    if q["label_kind"] != "none":
        parts.append(f"preferred item counts {counts['preferred_item']}, ties {counts['ties']}")
        parts.append(f"mean confidence {_fmt(q['mean_confidence'], '.2f')}")
    if counts["unlabelled"]:
        parts.append(f"unlabelled {counts['unlabelled']}")
    return "\n".join(parts)
