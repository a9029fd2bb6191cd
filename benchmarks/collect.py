"""Throughput of scripted-policy collection (env steps/s) against raw gymnasium stepping.

Rows, all on the same Meta-World tasks and episode length, in this process unless noted:

* ``gymnasium MT1, random actions``: ``gymnasium.make("Meta-World/MT1", env_name=...)``, stepping
  ``action_space.sample()`` — simulation + Meta-World's reward and nothing else (random arms
  rarely touch anything, so contacts are fewer and MuJoCo steps are cheaper).
* ``gymnasium MT1 + scripted policy``: the same env driven by Meta-World's scripted policy — what
  a hand-written collection loop costs. **The peer**: same work as the next two rows.
* ``robopref run_episode, scripted expert``: :func:`robopref.envs.run_episode` with the scripted
  policy, recording the arrays.
* ``robopref collect_dataset, W proc``: :func:`robopref.envs.collect_dataset` with the default mode
  mix (10% expert, 40% noisy over 4 levels, 20% goal-mismatch, 10% random, 20% other-task) into a
  Trajectory dataset; env construction included (excluded from the rows above), and process
  start-up for W > 1.

Two rates per row: steps per wall-clock second, and steps per CPU second (this process plus its
finished children, ``resource.getrusage``). On a shared machine the CPU rate is the stable
measure of per-step cost; the wall rate is what W > 1 processes improve. Each row is timed
``--repeats`` times and the run with the least CPU time is kept.

Usage (defaults are small; the machine is shared)::

    python benchmarks/collect.py --tasks drawer-open-v3 button-press-v3 --episodes 20 --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import warnings
from collections.abc import Callable

import gymnasium as gym
import metaworld  # noqa: F401  (registers Meta-World/MT1)
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from robopref.envs import CollectConfig, ScriptedPolicy, collect_dataset, make_env, run_episode


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """(steps, wall seconds, CPU seconds) of ``fn()``, which returns its number of env steps."""
    w0, c0 = time.perf_counter(), cpu_seconds()
    n = fn()
    return n, time.perf_counter() - w0, cpu_seconds() - c0


def raw_gym(envs: dict[str, gym.Env], episodes: int, scripted: bool) -> int:
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task, env in envs.items():
            policy = ENV_POLICY_MAP[task]() if scripted else None
            env.action_space.seed(0)
            for ep in range(episodes):
                obs, _ = env.reset(seed=ep)
                done = False
                while not done:
                    action = policy.get_action(obs) if scripted else env.action_space.sample()
                    obs, _, term, trunc, _ = env.step(np.clip(action, -1, 1))
                    done = term or trunc
                    n += 1
    return n


def robopref_episodes(envs: dict[str, gym.Env], episodes: int) -> int:
    n = 0
    for task, env in envs.items():
        policy = ScriptedPolicy(task)
        n += sum(len(run_episode(env, policy, seed=ep).actions) for ep in range(episodes))
    return n


def robopref_collect(tasks: list[str], episodes: int, steps: int, workers: int) -> int:
    unit = max(1, episodes // 10)  # the default mode mix, `episodes` per task (10 at least)
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
    return sum(len(t) for t in collect_dataset(cfg, progress=False))


def main() -> None:
    warnings.filterwarnings("ignore", module="gymnasium")  # MT1's zero-width goal bounds warning
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=["drawer-open-v3", "button-press-v3"])
    p.add_argument("--episodes", type=int, default=20, help="episodes per task and row")
    p.add_argument("--steps", type=int, default=200, help="max_episode_steps")
    p.add_argument("--workers", type=int, nargs="*", default=[2], help="rows with W processes")
    p.add_argument("--repeats", type=int, default=3, help="timings per row; least CPU is kept")
    args = p.parse_args()
    e, s, tasks = args.episodes, args.steps, args.tasks

    def best(fn: Callable[[], int]) -> tuple[int, float, float]:
        return min((timed(fn) for _ in range(args.repeats)), key=lambda r: r[2])

    # Env construction is outside the timings of the in-process rows (MT1 resets 50 times to
    # pre-sample its goals); collect_dataset's rows include it.
    mt1 = {t: gym.make("Meta-World/MT1", env_name=t, seed=0, max_episode_steps=s) for t in tasks}
    ours = {t: make_env(t, seed=0, max_episode_steps=s) for t in tasks}
    rows = [
        ("gymnasium MT1, random actions", best(lambda: raw_gym(mt1, e, scripted=False))),
        ("gymnasium MT1 + scripted policy", best(lambda: raw_gym(mt1, e, scripted=True))),
        ("robopref run_episode, scripted expert", best(lambda: robopref_episodes(ours, e))),
    ]
    for w in [1, *args.workers]:
        rows.append(
            (
                f"robopref collect_dataset, {w} proc",
                best(lambda w=w: robopref_collect(tasks, e, s, w)),
            )
        )

    peer = rows[1][1][0] / rows[1][1][2]
    print(f"tasks={tasks} episodes/task={e} max_episode_steps={s} repeats={args.repeats}")
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    print(f"| {'row':38s} | steps | wall s | steps/s | CPU s | steps/CPU-s | vs peer (CPU) |")
    print(f"|{'-' * 40}|------:|-------:|--------:|------:|------------:|--------------:|")
    for name, (n, wall, cpu_s) in rows:
        print(
            f"| {name:38s} | {n:5d} | {wall:6.2f} | {n / wall:7.0f} | {cpu_s:5.2f} | "
            f"{n / cpu_s:11.0f} | {n / cpu_s / peer:13.2f} |"
        )


if __name__ == "__main__":
    main()
