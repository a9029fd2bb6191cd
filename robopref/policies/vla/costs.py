"""GRAPE's cost machinery on Meta-World: what each task declares (stages, target bodies), robot
contact counting, and the guided-score components of a batch of rollouts.

The pure functions (stage costs, external reward, guided scores, pairs) live in
:mod:`robopref.policies.vla.preferences`; this module ties them to the simulator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robopref.policies.vla.base import ActionTokenPolicy
from robopref.policies.vla.model import batch_token_logprobs
from robopref.policies.vla.preferences import SCORE_TERMS, Stage, external_reward


@dataclass(frozen=True)
class TaskCosts:
    """What a task declares for the guided cost.

    Attributes:
        stages: sequential keypoint constraints (:class:`Stage`), may be empty.
        target_bodies: MuJoCo bodies the robot may touch (with their children); ``None`` = not
            declared (then the collision term cannot be used for this task; ``[]`` declares
            that every non-robot contact is a collision).
    """

    stages: tuple[Stage, ...] = ()
    target_bodies: tuple[str, ...] | None = None


def check_task_costs(
    tasks: Sequence[str], specs: Mapping[str, TaskCosts], weights: Mapping[str, float], where: str
) -> None:
    """Raise a one-line ``ValueError`` naming the first task that lacks what a non-zero weight of
    ``weights`` needs (stages for ``stages``, declared target bodies for ``collisions``), or an
    unknown cost term."""
    unknown = sorted(set(weights) - set(SCORE_TERMS))
    if unknown:
        raise ValueError(
            f"{where}: unknown cost term {unknown[0]!r}, expected one of {SCORE_TERMS}"
        )
    for task in tasks:
        spec = specs.get(task, TaskCosts())
        if weights.get("stages", 0) != 0 and not spec.stages:
            raise ValueError(
                f"task_specs.{task}.stages: {where} weights the stage cost but task {task} "
                "declares no stages"
            )
        if weights.get("collisions", 0) != 0 and spec.target_bodies is None:
            raise ValueError(
                f"task_specs.{task}.target_bodies: {where} weights collisions but task {task} "
                "declares no target bodies (write [] if the robot may touch nothing)"
            )


class CollisionCounter:
    """Counts the contacts between the robot (the bodies under ``right_l0``: arm and gripper) and
    any geom whose body is neither the robot's nor a target body (``target_bodies`` and their
    children) in a MuJoCo ``data``."""

    def __init__(self, model: Any, target_bodies: Sequence[str], task: str = ""):
        import mujoco

        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(model.nbody)]
        parent = np.asarray(model.body_parentid)

        def subtree(root: int) -> np.ndarray:
            inside = np.zeros(model.nbody, dtype=bool)
            for b in range(model.nbody):
                x = b
                while True:
                    if x == root:
                        inside[b] = True
                        break
                    if x == 0:
                        break
                    x = parent[x]
            return inside

        if "right_l0" not in names:
            raise ValueError(f"{task}: no body 'right_l0' (the Sawyer arm) in the MuJoCo model")
        self.robot = subtree(names.index("right_l0"))
        self.target = np.zeros(model.nbody, dtype=bool)
        for name in target_bodies:
            if name not in names:
                known = sorted(n for n in names[1:] if n)
                raise ValueError(
                    f"task_specs.{task}.target_bodies: unknown body {name!r}; bodies: {known}"
                )
            self.target |= subtree(names.index(name))
        self.geom_body = np.asarray(model.geom_bodyid)

    def __call__(self, data: Any) -> int:
        if data.ncon == 0:
            return 0
        bodies = self.geom_body[np.asarray(data.contact.geom[: data.ncon])]  # [ncon, 2]
        robot = self.robot[bodies]
        one_robot = robot[:, 0] != robot[:, 1]
        other = np.where(robot[:, 0], bodies[:, 1], bodies[:, 0])
        return int((one_robot & ~self.target[other]).sum())


def score_components(
    policy: ActionTokenPolicy, trajectories: Sequence[Any], max_steps: int, stage_scale: float
) -> dict[str, np.ndarray]:
    """The guided-score terms ``[N]`` of each trajectory (see
    :func:`~robopref.policies.vla.preferences.guided_scores`): ``success`` (0/1), ``stages``
    (``R_ext``), ``logp`` (nats per step under ``policy``), ``length`` (fraction of
    ``max_steps``), ``collisions`` (contacts per step), ``action`` (mean squared action)."""
    import torch

    logp = []
    with torch.no_grad():
        for s in range(0, len(trajectories), 16):
            chunk = list(trajectories[s : s + 16])
            lp, _ = batch_token_logprobs(policy, chunk)
            logp += [float(lp[i].sum()) / len(t) for i, t in enumerate(chunk)]
    lengths = np.array([len(t) for t in trajectories], dtype=np.float64)
    return {
        "success": np.array([float(t.success) for t in trajectories]),
        "stages": np.array(
            [
                external_reward(np.asarray(t.metadata["stage_costs"]), stage_scale)
                for t in trajectories
            ]
        ),
        "logp": np.array(logp),
        "length": lengths / max_steps,
        "collisions": np.array([t.metadata["collisions"] for t in trajectories]) / lengths,
        "action": np.array([float(np.mean(np.square(t.actions))) for t in trajectories]),
    }


def summarize_rollouts(trajectories: Sequence[Any]) -> dict[str, float]:
    """``success_rate``, ``mean_length`` (steps), ``mean_collisions`` (contacts per episode) and
    ``stages_done`` (fraction) over ``trajectories``."""
    return {
        "success_rate": float(np.mean([t.success for t in trajectories])),
        "mean_length": float(np.mean([len(t) for t in trajectories])),
        "mean_collisions": float(np.mean([t.metadata["collisions"] for t in trajectories])),
        "stages_done": float(
            np.mean([np.mean(t.metadata["stages_done"] or [0]) for t in trajectories])
        ),
    }
