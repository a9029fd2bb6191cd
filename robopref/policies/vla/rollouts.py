"""Meta-World episodes for VLA policies: a pool of reusable envs (with fast offscreen renderers
for image observations), batched lockstep rollouts that record GRAPE's costs, and noisy scripted
demonstrations for SFT.

Image observations are drawn by :class:`robopref.envs.render.FrameRenderer` (one reused
``mujoco.Renderer`` without shadows, reflections or multisampling, ~140 frames/s at 64x64 on a
CPU through OSMesa) instead of gymnasium's ``env.render()`` (0.1-0.3 s per frame here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robopref.data import Trajectory
from robopref.policies.vla.base import ActionTokenPolicy
from robopref.policies.vla.costs import CollisionCounter, TaskCosts
from robopref.policies.vla.preferences import keypoints_from_states, stage_costs


@dataclass(frozen=True)
class PixelSettings:
    """Rendered observations: a Meta-World camera, a square image size (pixels), and whether to
    use the fast renderer settings (no shadows/reflections/skybox/multisampling)."""

    camera: str = "corner"
    size: int = 32
    fast: bool = True


class EnvPool:
    """Reusable Meta-World envs per task (construction costs ~0.2 s; episodes are reset by seed),
    each with a collision counter and, for image observations, a :class:`FrameRenderer`.

    Args:
        max_episode_steps: step limit; episodes also end at the first success.
        task_costs: per task, its declared stages and target bodies.
        pixels: render images with these settings; ``None`` = state observations only.
    """

    def __init__(
        self,
        max_episode_steps: int,
        task_costs: Mapping[str, TaskCosts] | None = None,
        pixels: PixelSettings | None = None,
    ):
        self.max_episode_steps = max_episode_steps
        self.task_costs = dict(task_costs or {})
        self.pixels = pixels
        self.envs: dict[str, list] = {}
        self.renderers: dict[str, list] = {}
        self.counters: dict[str, CollisionCounter] = {}

    def costs(self, task: str) -> TaskCosts:
        return self.task_costs.get(task, TaskCosts())

    def get(self, task: str, n: int) -> list:
        """``n`` envs of ``task`` (created on first use, then reused)."""
        from robopref.envs import make_env
        from robopref.envs.render import FrameRenderer, RenderConfig

        envs = self.envs.setdefault(task, [])
        renderers = self.renderers.setdefault(task, [])
        while len(envs) < n:
            env = make_env(
                task,
                seed=0,
                max_episode_steps=self.max_episode_steps,
                terminate_on_success=True,
            )
            envs.append(env)
            if self.pixels is not None:
                p = self.pixels
                cfg = RenderConfig(camera=p.camera, width=p.size, height=p.size, fast=p.fast)
                renderers.append(FrameRenderer(env, cfg))
        if task not in self.counters:
            self.counters[task] = CollisionCounter(
                envs[0].unwrapped.model, self.costs(task).target_bodies or (), task
            )
        return envs[:n]

    def close(self) -> None:
        for renderers in self.renderers.values():
            for r in renderers:
                r.close()
        for envs in self.envs.values():
            for env in envs:
                env.close()


def rollout(
    policy: ActionTokenPolicy,
    pool: EnvPool,
    task: str,
    seeds: Sequence[int],
    greedy: bool,
    temperature: float = 1.0,
    generator: Any = None,
) -> list[Trajectory]:
    """Roll out ``policy`` in ``len(seeds)`` episodes of ``task`` in lockstep (one batched policy
    call per step). Episodes end at success or at the step limit.

    Returns trajectories whose ``actions`` are the executed actions (bin centres, so they
    re-tokenise exactly), observations ``[T, 39]`` (or ``{"state", "image" [T, S, S, 3]}``), and
    metadata ``seed``, ``collisions`` (total contacts with non-target geoms), ``stage_costs``
    (metres), ``stages_done`` and ``final_state`` (the state after the last action).
    """
    from robopref.envs import instruction

    stages = list(pool.costs(task).stages)
    pixels = "image" in policy.obs_mode
    if pixels and pool.pixels is None:
        raise ValueError(f"rollout: obs_mode {policy.obs_mode!r} needs an EnvPool with pixels")
    envs = pool.get(task, len(seeds))
    renderers = pool.renderers.get(task, [])
    counter = pool.counters[task]
    text = instruction(task)
    n = len(seeds)
    obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)]
    rec = [
        {"states": [], "images": [], "actions": [], "rewards": [], "successes": [], "collisions": 0}
        for _ in range(n)
    ]
    frames = [renderers[i].render() for i in range(n)] if pixels else None
    active = list(range(n))
    while active:
        batch: dict[str, np.ndarray] = {
            "state": np.stack([obs[i] for i in active]).astype(np.float32)
        }
        if pixels:
            batch["image"] = np.stack([frames[i] for i in active])
        actions = policy.act(batch, [text] * len(active), greedy, temperature, generator)
        still = []
        for a, i in zip(actions, active, strict=True):
            r = rec[i]
            r["states"].append(obs[i].astype(np.float32))
            if pixels:
                r["images"].append(frames[i])
            obs[i], reward, terminated, truncated, info = envs[i].step(a)
            r["actions"].append(a)
            r["rewards"].append(reward)
            r["successes"].append(info["success"])
            r["collisions"] += counter(envs[i].unwrapped.data)
            if terminated or truncated:
                r["final"] = obs[i].astype(np.float32)
            else:
                if pixels:
                    frames[i] = renderers[i].render()
                still.append(i)
        active = still
    out = []
    for i, r in enumerate(rec):
        states = np.asarray(r["states"])
        trajectory_states = np.concatenate([states, r["final"][None]])
        costs, done = stage_costs(keypoints_from_states(trajectory_states), stages)
        observations = (
            {"state": states, "image": np.asarray(r["images"], dtype=np.uint8)}
            if pixels
            else states
        )
        out.append(
            Trajectory(
                observations=observations,
                actions=np.asarray(r["actions"], dtype=np.float32),
                rewards=np.asarray(r["rewards"]),
                successes=np.asarray(r["successes"]),
                task=task,
                instruction=text,
                metadata={
                    "seed": int(seeds[i]),
                    "collisions": int(r["collisions"]),
                    "stage_costs": costs.tolist(),
                    "stages_done": done.tolist(),
                    "final_state": r["final"].tolist(),
                },
            )
        )
    return out


def scripted_demos(
    pool: EnvPool,
    tasks: Sequence[str],
    per_task: int,
    noise: float,
    successful_only: bool,
    seed_of: Any,
    label: str | None = None,
) -> list[Trajectory]:
    """Noisy scripted demonstrations (Gaussian action noise of std ``noise``) of ``tasks``,
    ``per_task`` each (successful ones only when asked; at most ``5 * per_task`` tries);
    ``seed_of(task_index, try_index)`` gives each episode's reset seed. With pixels, frames are
    rendered by the pool's renderer. ``label``: a progress bar over the demonstrations kept."""
    from robopref.envs import instruction, run_episode, scripted_policy
    from robopref.progress import bar

    shown = bar(len(tasks) * per_task, label or "", unit="demo", enabled=label is not None)
    demos = []
    for ti, task in enumerate(tasks):
        env = pool.get(task, 1)[0]
        expert = scripted_policy(task)
        kept, i = 0, 0
        while kept < per_task and i < 5 * per_task:
            seed = int(seed_of(ti, i))
            i += 1
            if pool.pixels is not None:
                traj = _scripted_with_frames(env, pool.renderers[task][0], expert, seed, noise)
            else:
                ep = run_episode(env, expert, seed=seed, noise=noise)
                traj = Trajectory(ep.observations, ep.actions, ep.rewards, ep.successes, ep.dones)
            if successful_only and not traj.success:
                continue
            traj.task, traj.instruction = task, instruction(task)
            traj.metadata = {"seed": seed, "mode": "scripted"}
            demos.append(traj)
            kept += 1
            shown.update(1)
        if kept == 0:
            raise RuntimeError(
                f"sft: no successful scripted demonstration of {task} in {i} tries within "
                f"max_episode_steps={pool.max_episode_steps}; raise max_episode_steps, lower "
                "sft.action_noise or set sft.successful_only=false"
            )
    shown.close()
    return demos


def _scripted_with_frames(
    env: Any, renderer: Any, expert: Any, seed: int, noise: float
) -> Trajectory:
    rng = np.random.default_rng([seed, 1])
    obs, _ = env.reset(seed=seed)
    states, images, actions, rewards, successes = [], [], [], [], []
    done = False
    while not done:
        images.append(renderer.render())
        a = np.clip(expert(obs) + noise * rng.standard_normal(4), -1, 1).astype(np.float32)
        states.append(obs.astype(np.float32))
        obs, reward, terminated, truncated, info = env.step(a)
        actions.append(a)
        rewards.append(reward)
        successes.append(info["success"])
        done = terminated or truncated
    return Trajectory(
        {"state": np.asarray(states), "image": np.asarray(images, dtype=np.uint8)},
        np.asarray(actions),
        np.asarray(rewards),
        np.asarray(successes),
    )
