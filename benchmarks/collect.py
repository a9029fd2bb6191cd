"""Throughput of scripted-policy collection (env steps/s) against raw gymnasium stepping.

Rows, all on the same Meta-World tasks and episode length, in this process unless noted:

* ``gymnasium MT1, random actions``: ``gymnasium.make("Meta-World/MT1", env_name=...)``, stepping
  ``action_space.sample()`` — the ceiling (simulation + Meta-World's reward, nothing else).
* ``gymnasium MT1 + scripted policy``: the same env driven by Meta-World's scripted policy — what
  a hand-written collection loop costs.
* ``robopref run_episode, scripted expert``: :func:`robopref.envs.run_episode` with the scripted
  policy — the same work as the row above plus recording the arrays (apples to apples).
* ``robopref collect_dataset, W proc``: :func:`robopref.envs.collect_dataset` with the default mode
  mix (expert, noisy, goal-mismatch, random, other-task), building the Trajectory dataset;
  env construction is included, process start-up too for W > 1.

Each row is timed ``--repeats`` times and the best (shortest) time is kept: on a shared machine
the minimum is the least disturbed measurement.

Usage (defaults are small; the machine is shared)::

    python benchmarks/collect.py --tasks drawer-open-v3 button-press-v3 --episodes 20 --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import gymnasium as gym
import metaworld  # noqa: F401  (registers Meta-World/MT1)
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from robopref.envs import CollectConfig, ScriptedPolicy, collect_dataset, make_env, run_episode


def raw_gym(task: str, episodes: int, steps: int, scripted: bool) -> tuple[int, float]:
    env = gym.make("Meta-World/MT1", env_name=task, seed=0, max_episode_steps=steps)
    policy = ENV_POLICY_MAP[task]() if scripted else None
    env.action_space.seed(0)
    n, t0 = 0, time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ep in range(episodes):
            obs, _ = env.reset(seed=ep)
            done = False
            while not done:
                action = policy.get_action(obs) if scripted else env.action_space.sample()
                obs, _, term, trunc, _ = env.step(np.clip(action, -1, 1))
                done = term or trunc
                n += 1
    dt = time.perf_counter() - t0
    env.close()
    return n, dt


def robopref_episodes(task: str, episodes: int, steps: int) -> tuple[int, float]:
    env = make_env(task, seed=0, max_episode_steps=steps)
    policy = ScriptedPolicy(task)
    n, t0 = 0, time.perf_counter()
    for ep in range(episodes):
        n += len(run_episode(env, policy, seed=ep).actions)
    dt = time.perf_counter() - t0
    env.close()
    return n, dt


def robopref_collect(
    tasks: list[str], episodes: int, steps: int, workers: int
) -> tuple[int, float]:
    # The default mode mix, scaled so that each task gets `episodes` episodes (10% expert,
    # 40% noisy over 4 levels, 20% goal-mismatch, 10% random, 20% other-task).
    unit = max(1, episodes // 10)
    cfg = CollectConfig(
        tasks=tasks,
        expert_episodes=unit,
        noisy_episodes=unit,
        goal_mismatch_episodes=2 * unit,
        random_episodes=unit,
        other_task_episodes=2 * unit,
        max_episode_steps=steps,
        num_workers=workers,
    )
    t0 = time.perf_counter()
    ds = collect_dataset(cfg, progress=False)
    dt = time.perf_counter() - t0
    return sum(len(t) for t in ds), dt


def main() -> None:
    warnings.filterwarnings("ignore", module="gymnasium")  # MT1's zero-width goal bounds warning
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=["drawer-open-v3", "button-press-v3"])
    p.add_argument("--episodes", type=int, default=20, help="episodes per task and row")
    p.add_argument("--steps", type=int, default=200, help="max_episode_steps")
    p.add_argument(
        "--workers", type=int, nargs="*", default=[2], help="extra rows with W processes"
    )
    p.add_argument("--repeats", type=int, default=3, help="timings per row; the best is kept")
    args = p.parse_args()

    def best(fn) -> tuple[int, float]:
        runs = [fn() for _ in range(args.repeats)]
        return min(runs, key=lambda r: r[1])

    def over_tasks(fn) -> tuple[int, float]:
        parts = [fn(task) for task in args.tasks]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    e, s = args.episodes, args.steps
    rows = [
        (
            "gymnasium MT1, random actions",
            *best(lambda: over_tasks(lambda t: raw_gym(t, e, s, False))),
        ),
        (
            "gymnasium MT1 + scripted policy",
            *best(lambda: over_tasks(lambda t: raw_gym(t, e, s, True))),
        ),
        (
            "robopref run_episode, scripted expert",
            *best(lambda: over_tasks(lambda t: robopref_episodes(t, e, s))),
        ),
    ]
    for w in [1, *args.workers]:
        n, dt = best(lambda w=w: robopref_collect(args.tasks, e, s, w))
        rows.append((f"robopref collect_dataset, {w} proc", n, dt))

    base = rows[0][1] / rows[0][2]
    print(f"tasks={args.tasks} episodes/task={args.episodes} steps={args.steps}")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}"
    )
    print(f"best of {args.repeats} runs per row")
    print(f"{'row':38s} {'steps':>8s} {'seconds':>8s} {'steps/s':>8s} {'vs raw':>7s}")
    for name, n, dt in rows:
        print(f"{name:38s} {int(n):8d} {dt:8.2f} {n / dt:8.0f} {n / dt / base:7.2f}")


if __name__ == "__main__":
    main()
