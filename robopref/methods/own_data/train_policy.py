"""Step ``train-policy``: an offline policy from a file's (learned) rewards or its preferences.

read DATA -> hold out ``holdout`` of the episodes -> train ``policy.name`` (iql, awr,
filtered_bc on the file's rewards; cpl on its labelled queries) -> ``policy.pt``
-> success ± SE in simulation when the data's task is a known Meta-World task; always the
held-out action error and the preference accuracy of the policy's implicit reward
``sum_t log pi(a_t | s_t)`` on the held-out queries
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from robopref.data import DataValidationError, TrajectoryDataset
from robopref.methods.common import RunResult, Stage, start_run
from robopref.methods.own_data.config import TrainPolicyConfig
from robopref.methods.own_data.data import (
    read_dataset,
    require_labels,
    rewards_recorded,
    vector_view,
)
from robopref.methods.own_data.results import policy_result
from robopref.methods.own_data.score import _subset_queries
from robopref.progress import is_quiet, step

Config = TrainPolicyConfig
METAWORLD_OBS_DIM = 39


def sim_task(dataset: TrajectoryDataset, config: TrainPolicyConfig) -> str | None:
    """The Meta-World task to evaluate in, or None (offline metrics only)."""
    if config.evaluate == "offline":
        return None
    tasks = dataset.tasks
    task = tasks[0] if len(tasks) == 1 else None
    known = False
    if task and dataset[0].observations.shape[1] == METAWORLD_OBS_DIM:
        from robopref.envs.tasks import list_tasks

        known = task in list_tasks()
    if config.evaluate == "sim" and not known:
        raise DataValidationError(
            f"{config.data}: evaluate=sim: expected one known Meta-World task with {METAWORLD_OBS_DIM}"
            f"-dim observations, found tasks {tasks}"
        )
    return task if known else None


def split_episodes(
    n: int, holdout: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` episode indices; ``test`` is empty when ``holdout`` is 0 or n < 2."""
    n_test = min(n - 1, round(holdout * n)) if holdout > 0 and n > 1 else 0
    order = rng.permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def subset(dataset: TrajectoryDataset, keep: np.ndarray) -> TrajectoryDataset:
    trajs = [dataset[int(i)] for i in keep]
    return TrajectoryDataset(trajs, _subset_queries(dataset.queries, keep), dataset.metadata)


def preference_accuracy(scores: np.ndarray, queries) -> tuple[float | None, int]:
    """Share of queries whose preferred item gets the highest score (ties in the labels are
    skipped); ``(None, 0)`` when no query counts."""
    if queries is None or queries.label_kind == "none":
        return None, 0
    correct = counted = 0
    for s, y, m in zip(scores, queries.labels, queries.mask):
        s, y = s[m], y[m]
        if queries.label_kind == "soft_pair":
            if y[0] == 0.5:
                continue
            best = {0 if y[0] > 0.5 else 1}
        else:
            if np.all(y == y[0]):
                continue
            best = set(np.flatnonzero(y == y.max()))
        counted += 1
        correct += int(np.argmax(s)) in best
    return (correct / counted if counted else None), counted


def run(config: TrainPolicyConfig, out_dir: str | Path) -> RunResult:
    import torch

    from robopref.policies.offline import TransitionBuffer, make_learner
    from robopref.rewards.segments import gather_segments

    name = config.policy.name
    dataset = read_dataset(config.data)
    if name == "cpl":
        require_labels(dataset, config.data, "train-policy with policy.name=cpl")
    elif not rewards_recorded(dataset):
        raise DataValidationError(
            f"{config.data}: rewards: policy.name={name} trains on rewards, found a file without "
            "recorded rewards (relabel it with a learned reward first: robopref relabel DATA "
            "--reward CKPT --out NEW; or use policy.name=cpl on its preference labels)"
        )
    view = vector_view(dataset, config.obs_key, config.data)
    task = sim_task(view, config)
    out_dir, rng = start_run(config, out_dir)
    train_idx, test_idx = split_episodes(len(view), config.holdout, rng)
    train, test = subset(view, train_idx), subset(view, test_idx) if len(test_idx) else view
    obs_dim, act_dim = view[0].observations.shape[1], view[0].actions.shape[1]
    key = {
        "data": config.data,
        "obs_key": config.obs_key,
        "holdout": config.holdout,
        "seed": config.seed,
        "policy": [
            name,
            config.policy.options().model_dump(mode="json", exclude={"steps", "device"}),
        ],
    }
    folder = Stage(
        f"policy[{name}]", out_dir / "ckpt" / name, key=key, reads=[config.data]
    ).folder()
    agent = make_learner(
        config.policy,
        obs_dim,
        act_dim,
        seed=config.seed,
        device=config.device,
        log_dir=str(out_dir / "tb" / name),
        checkpoint_dir=str(folder),
    )
    if name == "cpl":
        if train.queries is None:
            raise DataValidationError(
                f"{config.data}: preferences: no labelled query lies inside the training "
                f"episodes (holdout={config.holdout}); lower holdout"
            )
        agent.set_preferences(
            gather_segments(train, train.queries), soft=train.queries.label_kind == "soft_pair"
        )
    agent.train(TransitionBuffer.from_dataset(train), progress=not is_quiet())
    agent.save(out_dir / "policy.pt")

    obs = np.concatenate([t.observations for t in test]).astype(np.float32)
    act = np.concatenate([t.actions for t in test])
    mse = float(np.mean((agent.act(obs) - np.clip(act, -1, 1)) ** 2))
    acc, n_pref = None, 0
    if test.queries is not None and test.queries.label_kind != "none":
        seg = gather_segments(test, test.queries)
        with torch.no_grad():
            lp = []
            for i in range(0, len(seg), 256):
                part = seg[i : i + 256].to(agent.device)
                B, K, H, _ = part.obs.shape
                flat = agent.actor.log_prob(
                    part.obs.reshape(-1, obs_dim), part.act.reshape(-1, act_dim)
                )
                lp.append(torch.where(part.step_mask, flat.reshape(B, K, H), 0.0).sum(-1).cpu())
        acc, n_pref = preference_accuracy(torch.cat(lp).numpy(), test.queries)
    row = {
        "policy": name,
        "seed": config.seed,
        "train_episodes": len(train_idx),
        "test_episodes": len(test_idx),
        "policy_steps": agent.step,
        "action_mse": mse,
        "pref_accuracy": acc,
        "pref_se": math.sqrt(acc * (1 - acc) / n_pref) if acc is not None else None,
        "pref_queries": n_pref,
    }
    if task is not None:
        from robopref.envs import evaluate_on_task

        n = config.eval_episodes
        with step(f"eval[{name}] {n} episodes", enabled=not is_quiet()):
            ev = evaluate_on_task(
                agent.act,
                task,
                num_episodes=n,
                seed=config.eval_seed,
                max_episode_steps=config.eval_max_steps or max(len(t) for t in view),
            )
        p = float(ev["success_rate"])
        row.update(
            task=task,
            success_rate=p,
            success_se=math.sqrt(p * (1 - p) / n),
            eval_episodes=n,
            mean_return=float(ev["mean_return"]),
        )
    return policy_result(row, out_dir, sim=task is not None)
