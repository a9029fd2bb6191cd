"""Evaluation of VLA policies on Meta-World: success rate, steps per episode and contacts per
episode over fixed episode configurations, the same for every policy (common random numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robopref.policies.vla.base import ActionTokenPolicy
from robopref.policies.vla.costs import summarize_rollouts
from robopref.policies.vla.rollouts import EnvPool, rollout


@dataclass(frozen=True)
class EvalProtocol:
    """Episode ``i`` of every task is reset with seed ``seed + i`` for every policy; actions are
    decoded greedily or sampled at ``temperature`` (a generator seeded with ``seed`` per task,
    so two policies see the same random stream). ``chunk``: episodes run in lockstep at once
    (None: all of a task's), which bounds memory (one env each); the stream then depends on it."""

    episodes_per_task: int = 10
    seed: int = 10_000
    greedy: bool = True
    temperature: float = 1.0
    chunk: int | None = None


def binomial_se(p: float, n: int) -> float:
    """Standard error ``sqrt(p (1 - p) / n)`` of a success rate ``p`` over ``n`` episodes."""
    return float(np.sqrt(p * (1 - p) / n)) if n > 0 else float("nan")


def evaluate(
    policy: ActionTokenPolicy,
    pool: EnvPool,
    tasks: Sequence[str],
    protocol: EvalProtocol,
    progress: Any = None,
) -> dict[str, Any]:
    """Per-task and mean success rate, episode length (steps; episodes end at success) and
    collisions (contacts per episode) over ``protocol.episodes_per_task`` configurations per task.
    ``progress``: a bar (:func:`robopref.progress.bar`) advanced by each task's episodes.

    Returns ``{"mean": {success_rate, success_se, mean_length, mean_collisions, episodes},
    "per_task": {task: {...}}}``; ``mean`` is empty when ``tasks`` is.
    """
    import torch

    per_task = {}
    for task in tasks:
        generator = torch.Generator().manual_seed(protocol.seed)
        seeds = [protocol.seed + i for i in range(protocol.episodes_per_task)]
        step = protocol.chunk or len(seeds)
        trajs = []
        for s in range(0, len(seeds), step):
            chunk = seeds[s : s + step]
            trajs += rollout(
                policy, pool, task, chunk, protocol.greedy, protocol.temperature, generator
            )
            if progress is not None:
                progress.update(len(chunk))
        per_task[task] = summarize_rollouts(trajs)
    if not tasks:
        return {"mean": {}, "per_task": per_task}
    keys = ("success_rate", "mean_length", "mean_collisions")
    mean = {k: float(np.mean([m[k] for m in per_task.values()])) for k in keys}
    n = protocol.episodes_per_task * len(tasks)
    mean["success_se"] = binomial_se(mean["success_rate"], n)
    mean["episodes"] = n
    return {"mean": mean, "per_task": per_task}


def evaluate_splits(
    policy: ActionTokenPolicy,
    pool: EnvPool,
    tasks: Sequence[str],
    held_out_tasks: Sequence[str],
    protocol: EvalProtocol,
    label: str | None = None,
    enabled: bool = True,
) -> dict[str, Any]:
    """:func:`evaluate` on the in-domain and the held-out tasks; with ``label``, a progress bar
    ``label N episodes`` over both."""
    from robopref.progress import bar

    total = protocol.episodes_per_task * (len(tasks) + len(held_out_tasks))
    shown = label is not None and enabled
    with bar(total, f"{label} {total} episodes", unit="ep", enabled=shown) as progress:
        return {
            "in_domain": evaluate(policy, pool, tasks, protocol, progress),
            "held_out": evaluate(policy, pool, held_out_tasks, protocol, progress),
        }
