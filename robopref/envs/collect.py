"""Scripted-policy data collection on Meta-World, following the IPL recipe.

Per task, :func:`collect_dataset` mixes five kinds of episodes (``metadata["mode"]``):

* ``"expert"``: the task's scripted policy, no noise.
* ``"noisy_expert"``: the scripted policy with Gaussian action noise of each std in
  ``noise_levels`` (action units; actions are then clipped to [-1, 1]).
* ``"goal_mismatch"``: the scripted policy acting in configuration A while it *sees* the object
  and goal positions of another configuration B of the same task (``obs + (obs_B - obs_A)`` on
  the position slots). It competently pursues the wrong target; this works for every task,
  including the half whose scripted policy never reads the goal entries (button, door, drawer...).
* ``"random"``: uniform random actions in [-1, 1].
* ``"other_task"``: another task's scripted policy run in this task's env.

Every episode is a pure function of its spec (task, mode, noise, index and the config seed):
its seed is derived from those values, not from a shared stream, so the dataset is the same
whatever the number of worker processes or the order in which episodes run.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import Literal

import gymnasium as gym
import numpy as np
from pydantic import Field, field_validator, model_validator

from robopref.config import Seed, StrictModel
from robopref.data import Trajectory, TrajectoryDataset
from robopref.envs.rollout import run_episode
from robopref.envs.tasks import (
    OBS_DIM,
    POSITION_SLOTS,
    ScriptedPolicy,
    check_task,
    instruction,
    make_env,
)

Mode = Literal["expert", "noisy_expert", "goal_mismatch", "random", "other_task"]
MODES: tuple[str, ...] = ("expert", "noisy_expert", "goal_mismatch", "random", "other_task")

# Policies for "other_task" episodes when the config names a single task and no other_tasks:
# the common preference-learning tasks of the PbRL literature.
DEFAULT_OTHER_TASKS = (
    "button-press-v3",
    "drawer-open-v3",
    "door-open-v3",
    "sweep-into-v3",
    "plate-slide-v3",
    "window-open-v3",
    "hammer-v3",
    "assembly-v3",
)


class CollectConfig(StrictModel):
    """What :func:`collect_dataset` collects. Episode counts are per task (and per noise level for
    ``noisy_episodes``); the defaults give 10 + 4 x 10 + 20 + 10 + 20 = 100 episodes per task.
    """

    tasks: list[str] = Field(min_length=1)
    """Meta-World task names (e.g. ``button-press-v3``)."""
    expert_episodes: int = Field(10, ge=0)
    """Episodes of the task's scripted policy."""
    noisy_episodes: int = Field(10, ge=0)
    """Scripted-policy episodes with Gaussian action noise, per noise level."""
    noise_levels: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 1.0])
    """Action-noise standard deviations of the noisy episodes."""
    goal_mismatch_episodes: int = Field(20, ge=0)
    """Scripted-policy episodes that see another scene's object and goal (a wrong target)."""
    random_episodes: int = Field(10, ge=0)
    """Episodes of uniformly random actions."""
    other_task_episodes: int = Field(20, ge=0)
    """Episodes of other tasks' scripted policies in this task's scene."""
    other_tasks: list[str] | None = None
    """Policies for other_task episodes; default: the config's other tasks, or
    DEFAULT_OTHER_TASKS when it has only one."""
    mismatch_noise: float = Field(0.1, ge=0)
    """Action noise std of goal_mismatch and other_task episodes."""
    max_episode_steps: int = Field(200, ge=1)
    """Steps per episode."""
    goal_observable: bool = True
    """The goal position is part of the observation."""
    seed: Seed = 0
    """Seeds the scenes, the noise and the random actions."""
    scene_seed: Seed | None = None
    """One scene: every episode resets with this seed (same object/goal configuration; episodes
    still differ in mode, noise and mismatched goals); None: a new configuration per episode."""
    num_workers: int = Field(1, ge=1)
    """Processes; 1 runs in this process."""
    start_method: Literal["auto", "fork", "spawn", "forkserver"] = "auto"
    """How worker processes start; auto: fork where available (fast, no re-import), else spawn."""

    @field_validator("tasks", "other_tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str] | None, info) -> list[str] | None:
        for t in tasks or []:
            check_task(t, field=info.field_name)
        if tasks is not None and len(set(tasks)) != len(tasks):
            raise ValueError(f"{info.field_name}: expected distinct task names, found {tasks}")
        return tasks

    @field_validator("noise_levels")
    @classmethod
    def _non_negative(cls, levels: list[float]) -> list[float]:
        bad = [x for x in levels if not (x >= 0 and math.isfinite(x))]
        if bad:
            raise ValueError(f"noise_levels: expected finite values >= 0, found {bad}")
        if len(set(levels)) != len(levels):
            raise ValueError(f"noise_levels: expected distinct values, found {levels}")
        return levels

    @model_validator(mode="after")
    def _other_pool_not_empty(self) -> CollectConfig:
        if self.other_tasks is not None and self.other_task_episodes > 0:
            for task in self.tasks:
                if not [t for t in self.other_tasks if t != task]:
                    raise ValueError(
                        f"other_tasks: no task other than '{task}' to take a policy from"
                    )
        return self


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to collect. ``seed`` resets the env (object/goal configuration); the action
    noise comes from ``default_rng([noise_seed, 1])`` (``noise_seed`` defaults to ``seed``)."""

    task: str
    mode: str
    noise: float
    index: int
    seed: int
    policy_task: str | None  # whose scripted policy acts; None for random actions
    mismatch_seed: int | None = None  # configuration B the policy sees (goal_mismatch only)
    noise_seed: int | None = None


def _derive_seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def _other_pool(config: CollectConfig, task: str) -> list[str]:
    pool = config.other_tasks if config.other_tasks is not None else config.tasks
    pool = [t for t in pool if t != task]
    return pool or [t for t in DEFAULT_OTHER_TASKS if t != task]


def plan_episodes(config: CollectConfig) -> list[EpisodeSpec]:
    """The episodes of ``config`` in dataset order (task-major, then mode, noise, index)."""
    specs = []
    for task in config.tasks:
        task_key = zlib.crc32(task.encode())
        plan: list[tuple[str, float, int, str | None]] = [
            ("expert", 0.0, config.expert_episodes, task)
        ]
        plan += [("noisy_expert", n, config.noisy_episodes, task) for n in config.noise_levels]
        plan += [("goal_mismatch", config.mismatch_noise, config.goal_mismatch_episodes, task)]
        plan += [("random", 0.0, config.random_episodes, None)]
        plan += [("other_task", config.mismatch_noise, config.other_task_episodes, "")]
        pool = _other_pool(config, task)
        for mode, noise, count, policy_task in plan:
            mode_id, noise_key = MODES.index(mode), round(noise * 1e6)
            for i in range(count):
                seed = _derive_seed(config.seed, task_key, mode_id, noise_key, i)
                specs.append(
                    EpisodeSpec(
                        task=task,
                        mode=mode,
                        noise=float(noise),
                        index=i,
                        seed=seed if config.scene_seed is None else config.scene_seed,
                        policy_task=pool[i % len(pool)] if policy_task == "" else policy_task,
                        mismatch_seed=_derive_seed(seed, 1) if mode == "goal_mismatch" else None,
                        noise_seed=seed,
                    )
                )
    return specs


def mismatch_offset(env: gym.Env, seed: int, mismatch_seed: int) -> np.ndarray:
    """``[39]`` offset ``obs_B - obs_A`` on the position slots of the first observations of the
    configurations reset with ``mismatch_seed`` (B) and ``seed`` (A); zero elsewhere."""
    obs_b, _ = env.reset(seed=mismatch_seed)
    obs_a, _ = env.reset(seed=seed)
    offset = np.zeros(OBS_DIM)
    for sl in POSITION_SLOTS:
        offset[sl] = obs_b[sl] - obs_a[sl]
    return offset


class _Collector:
    """Runs episode specs, keeping one env and one scripted policy per task."""

    def __init__(self, max_episode_steps: int, goal_observable: bool):
        self.max_episode_steps = max_episode_steps
        self.goal_observable = goal_observable
        self.envs: dict[str, gym.Env] = {}
        self.policies: dict[str, ScriptedPolicy] = {}

    def env(self, task: str) -> gym.Env:
        if task not in self.envs:
            self.envs[task] = make_env(
                task,
                seed=0,
                max_episode_steps=self.max_episode_steps,
                goal_observable=self.goal_observable,
            )
        return self.envs[task]

    def policy(self, task: str | None) -> ScriptedPolicy | None:
        if task is None:
            return None
        if task not in self.policies:
            self.policies[task] = ScriptedPolicy(task)
        return self.policies[task]

    def run(self, spec: EpisodeSpec) -> Trajectory:
        env = self.env(spec.task)
        offset = None
        if spec.mismatch_seed is not None:
            offset = mismatch_offset(env, spec.seed, spec.mismatch_seed)
        noise_seed = spec.seed if spec.noise_seed is None else spec.noise_seed
        ep = run_episode(
            env,
            self.policy(spec.policy_task),
            seed=spec.seed,
            noise=spec.noise,
            rng=np.random.default_rng([noise_seed, 1]),
            obs_offset=offset,
        )
        metadata = {
            "mode": spec.mode,
            "noise": spec.noise,
            "seed": spec.seed,
            "noise_seed": noise_seed,
            "episode_index": spec.index,
            "policy_task": spec.policy_task,
            "mismatch_seed": spec.mismatch_seed,
            "rand_vec": ep.rand_vec.tolist(),
            "final_observation": ep.final_observation.tolist(),
            "terminated": ep.terminated,
        }
        return Trajectory(
            observations=ep.observations,
            actions=ep.actions,
            rewards=ep.rewards,
            successes=ep.successes,
            dones=ep.dones,
            task=spec.task,
            instruction=instruction(spec.task),
            metadata=metadata,
        )

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


_WORKER_COLLECTORS: dict[tuple[int, bool], _Collector] = {}


def _run_chunk(
    specs: list[EpisodeSpec], max_episode_steps: int, goal_observable: bool
) -> list[Trajectory]:
    """Worker-process entry point; envs are kept for the worker's next chunks."""
    key = (max_episode_steps, goal_observable)
    if key not in _WORKER_COLLECTORS:
        _WORKER_COLLECTORS[key] = _Collector(max_episode_steps, goal_observable)
    return [_WORKER_COLLECTORS[key].run(spec) for spec in specs]


def _mp_context(start_method: str) -> BaseContext:
    if start_method == "auto":
        start_method = "fork" if "fork" in get_all_start_methods() else "spawn"
    return get_context(start_method)


def _chunks(specs: list[EpisodeSpec], size: int) -> Iterable[list[EpisodeSpec]]:
    for i in range(0, len(specs), size):
        yield specs[i : i + size]


def collect_dataset(
    config: CollectConfig, progress: bool = True, label: str = "collect"
) -> TrajectoryDataset:
    """Collect the episodes of ``config`` (see the module docstring) into a dataset.

    Each trajectory has ``observations [T, 39]`` float32, ``actions [T, 4]`` float32, ground-truth
    ``rewards [T]``, ``successes [T]``, ``dones [T]``, ``task``, ``instruction`` and ``metadata``
    with ``mode``, ``noise``, ``seed`` (replays the episode), ``episode_index``, ``policy_task``,
    ``mismatch_seed``, ``rand_vec``, ``final_observation`` (the observation after the last action)
    and ``terminated``. ``T = config.max_episode_steps``. The same config gives identical arrays,
    with any ``num_workers``. ``label`` names the progress bar (e.g. ``collect[target]``).
    """
    from robopref.progress import bar as progress_bar

    specs = plan_episodes(config)
    args = (config.max_episode_steps, config.goal_observable)
    bar = progress_bar(len(specs), label, unit="ep", enabled=progress)
    try:
        if config.num_workers == 1 or len(specs) <= 1:
            collector = _Collector(*args)
            trajectories = []
            try:
                for spec in specs:
                    trajectories.append(collector.run(spec))
                    bar.update(1)
            finally:
                collector.close()
        else:
            # Small chunks of consecutive (same-task) episodes: each worker builds an env per
            # task it meets, and the progress bar moves often. Forked workers only step MuJoCo
            # and numpy (never torch), so a parent holding torch threads is not a problem.
            size = max(1, min(25, math.ceil(len(specs) / (4 * config.num_workers))))
            chunks = list(_chunks(specs, size))
            results: list[list[Trajectory] | None] = [None] * len(chunks)
            with ProcessPoolExecutor(
                config.num_workers, mp_context=_mp_context(config.start_method)
            ) as pool:
                futures = {pool.submit(_run_chunk, c, *args): i for i, c in enumerate(chunks)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(len(chunks[futures[fut]]))
            trajectories = [t for chunk in results for t in chunk]  # type: ignore[union-attr]
    finally:
        bar.close()
    return TrajectoryDataset(
        trajectories,
        metadata={
            "source": "metaworld",
            "collect_config": config.model_dump(mode="json"),
            "obs_dim": OBS_DIM,
            "act_dim": 4,
        },
    )
