"""Roll out a trained VLA adapter in a Meta-World task: success rate ± SE over fixed episodes
(``robopref vla-eval --base DIR --adapters DIR --task reach-v3 --episodes 20``)."""

from __future__ import annotations

import os
from typing import Any

from robopref.config import ConfigError


def evaluate_adapters(
    base: str,
    adapters: str | None,
    task: str,
    episodes: int = 20,
    max_episode_steps: int = 100,
    image_size: int = 64,
    greedy: bool = True,
    seed: int = 10_000,
    device: str = "auto",
) -> dict[str, Any]:
    """Success rate, its SE, steps and contacts of the policy ``base`` + ``adapters`` on
    ``episodes`` configurations of ``task`` (episode i reset with ``seed + i``), seeing
    ``image_size`` square camera frames. Bad folders or task names raise :class:`ConfigError`."""
    os.environ.setdefault("MUJOCO_GL", "osmesa" if device != "cuda" else "egl")
    from robopref.envs import check_task
    from robopref.policies.vla import EnvPool, EvalProtocol, PixelSettings, VLAPolicy, evaluate
    from robopref.utils import resolve_device

    try:
        check_task(task, "--task")
        policy = VLAPolicy.from_pretrained(base, adapters, device=resolve_device(device))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if policy.act_dim != 4:
        raise ConfigError(
            f"--adapters {adapters}: the policy emits {policy.act_dim}-d actions, a Meta-World "
            "task expects 4"
        )
    pool = EnvPool(max_episode_steps, pixels=PixelSettings(size=image_size))
    try:
        protocol = EvalProtocol(episodes_per_task=episodes, seed=seed, greedy=greedy)
        result = evaluate(policy, pool, [task], protocol)
    finally:
        pool.close()
    return result["mean"]
