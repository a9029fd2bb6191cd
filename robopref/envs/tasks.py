"""Meta-World v3 task factory: gymnasium envs, vector envs, scripted policies, instructions.

Meta-World's own entry points (``gymnasium.make("Meta-World/MT1", ...)``) pre-sample 50 goals
per task (50 resets at construction) and pick one at random on each reset. Here each env instead
draws a fresh object/goal configuration ("rand_vec") from its own seeded generator at every
reset, so that ``env.reset(seed=s)`` alone fixes the whole episode (configuration and dynamics
are deterministic given the actions), construction is cheap (~0.2 s) and any episode of a
dataset can be replayed from the seed stored in its metadata.

Observations are Meta-World's 39-d vectors (float64, units of metres for positions)::

    [0:3]   hand xyz              [3]     gripper opening
    [4:7]   object 1 xyz          [7:11]  object 1 quaternion
    [11:14] object 2 xyz          [14:18] object 2 quaternion (zeros when absent)
    [18:36] the same 18 values at the previous step (frame stack)
    [36:39] goal xyz (zeros when the goal is hidden)

Actions are ``[4]`` in ``[-1, 1]``: end-effector displacement (x 1 cm per unit) and gripper effort.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np

OBS_DIM = 39
ACT_DIM = 4

# Indices of the position slots of the observation (current frame, previous frame and goal):
# the parts a scripted policy reads to locate what it should reach for.
POSITION_SLOTS = (slice(4, 7), slice(11, 14), slice(22, 25), slice(29, 32), slice(36, 39))

# A short imperative instruction per task (for language-conditioned policies and VLAs).
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "turn the faucet handle to close it",
    "faucet-open-v3": "turn the faucet handle to open it",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "insert the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate back into the cabinet from the side",
    "plate-slide-back-v3": "slide the plate back into the cabinet",
    "plate-slide-side-v3": "slide the plate into the cabinet from the side",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "push the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "stick-push-v3": "grasp the stick and push the box with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "slide the window closed",
    "window-open-v3": "slide the window open",
}


class UnknownTaskError(ValueError):
    """A task name that is not a Meta-World v3 task with a scripted policy."""


@functools.cache
def _registries() -> tuple[dict[str, type], dict[str, type]]:
    """(task name -> env class, task name -> scripted policy class), imported lazily."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    return dict(ALL_V3_ENVIRONMENTS), dict(ENV_POLICY_MAP)


def list_tasks() -> list[str]:
    """Sorted names of the Meta-World v3 tasks that have a scripted policy (50 in Meta-World 3.1)."""
    envs, policies = _registries()
    return sorted(set(envs) & set(policies))


def check_task(task: str, field: str = "task") -> str:
    """Return ``task`` if it is known, else raise :class:`UnknownTaskError` naming close matches."""
    tasks = list_tasks()
    if task in tasks:
        return task
    close = difflib.get_close_matches(task, tasks, n=5, cutoff=0.5)
    if not close and f"{task}-v3" in tasks:
        close = [f"{task}-v3"]
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "no close match"
    raise UnknownTaskError(
        f"{field}: unknown Meta-World task '{task}' ({hint}); "
        f"expected one of the {len(tasks)} names of robopref.envs.list_tasks()"
    )


def instruction(task: str) -> str:
    """The natural-language instruction of ``task``, e.g. ``"press the button"``."""
    return INSTRUCTIONS.get(check_task(task), task.removesuffix("-v3").replace("-", " "))


class MetaWorldTask(gym.Wrapper):
    """A single Meta-World task whose object/goal configuration is re-sampled at every reset.

    ``reset(seed=s)`` re-seeds the configuration generator, so the episode is a function of ``s``
    and the actions. ``reset(options={"rand_vec": v})`` forces the configuration ``v`` (the
    ``[k]`` float vector Meta-World samples: object and/or goal positions, in metres).

    ``info`` of ``reset`` holds ``"rand_vec"`` (the configuration used) and ``"task"``; ``info``
    of ``step`` holds Meta-World's entries with ``"success"`` converted to ``bool``.
    """

    def __init__(self, env: gym.Env, task: str):
        super().__init__(env)
        self.task = task
        self.instruction = instruction(task)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        raw = self.env.unwrapped
        if seed is not None:
            raw.seed(int(seed))  # Meta-World seeds its configuration generator here
        forced = None if options is None else options.get("rand_vec")
        if forced is not None:
            forced = np.asarray(forced, dtype=np.float64)
            expected = raw._random_reset_space.low.shape
            if forced.shape != expected:
                raise ValueError(
                    f"reset options: field 'rand_vec': expected shape {expected}, found {forced.shape}"
                )
            raw._last_rand_vec = forced
            raw._freeze_rand_vec = True
        try:
            obs, info = self.env.reset()
        finally:
            raw._freeze_rand_vec = False
        info = dict(info, task=self.task, rand_vec=np.array(raw._last_rand_vec, dtype=np.float64))
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["success"] = bool(info.get("success", False))
        return obs, float(reward), terminated, truncated, info


def make_env(
    task: str,
    seed: int | None = None,
    max_episode_steps: int = 200,
    goal_observable: bool = True,
    render_mode: Literal["rgb_array", "depth_array", "human"] | None = None,
    camera: str | int | None = None,
    width: int = 480,
    height: int = 480,
    terminate_on_success: bool = False,
) -> gym.Env:
    """Make one Meta-World v3 task as a gymnasium env.

    Args:
        task: a name of :func:`list_tasks`, e.g. ``"button-press-v3"``.
        seed: seeds the configuration generator (the first ``reset()`` is then reproducible);
            ``reset(seed=...)`` re-seeds it.
        max_episode_steps: episode length; episodes are truncated (never terminated) at this step
            unless ``terminate_on_success``.
        goal_observable: put the goal xyz in ``obs[36:39]`` (Meta-World's "goal observable"
            variant, as in IPL/PT datasets); otherwise those entries are zero.
        render_mode, camera, width, height: pixel rendering. ``camera`` is a MuJoCo camera name
            (``"corner"``, ``"corner2"``, ``"corner3"``, ``"topview"``, ``"behindGripper"``,
            ``"gripperPOV"``) or id. Needs ``MUJOCO_GL=egl`` (GPU) or ``osmesa`` (CPU).
        terminate_on_success: end the episode (``terminated=True``) at the first success.

    Returns:
        A gymnasium env with observation ``[39]`` float64 and action ``Box(-1, 1, (4,))``.
    """
    check_task(task)
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps: expected >= 1, found {max_episode_steps}")
    env_cls = _registries()[0][task]
    kwargs: dict[str, Any] = {"render_mode": render_mode, "width": width, "height": height}
    if isinstance(camera, str):
        kwargs["camera_name"] = camera
    elif camera is not None:
        kwargs["camera_id"] = int(camera)
    raw = env_cls(**kwargs)
    if raw._partially_observable == goal_observable:
        raw._partially_observable = not goal_observable
        raw.__dict__.pop("sawyer_observation_space", None)  # cached property: recompute
    raw.observation_space = raw.sawyer_observation_space
    raw._set_task_called = True
    raw._freeze_rand_vec = False
    raw.seeded_rand_vec = True  # sample configurations from raw.np_random, not np.random
    raw.max_path_length = max_episode_steps
    raw.seed(int(seed) if seed is not None else int(np.random.SeedSequence().generate_state(1)[0]))
    env: gym.Env = MetaWorldTask(raw, task)
    if terminate_on_success:
        env = _TerminateOnSuccess(env)
    return gym.wrappers.TimeLimit(env, max_episode_steps)


class _TerminateOnSuccess(gym.Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or info["success"], truncated, info


def make_vector_env(
    task: str,
    num_envs: int,
    seed: int | None = None,
    max_episode_steps: int = 200,
    goal_observable: bool = True,
    vectorization_mode: Literal["sync", "async"] = "sync",
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of :func:`make_env` in a gymnasium vector env.

    Sub-env ``i`` is seeded with ``seed + i``. ``"async"`` runs each copy in its own process
    (worth it from ~4 envs on a machine with as many free cores). Autoreset follows gymnasium's
    default (next-step). Extra keyword arguments go to :func:`make_env`.
    """
    check_task(task)
    if num_envs < 1:
        raise ValueError(f"num_envs: expected >= 1, found {num_envs}")
    fns = [
        functools.partial(
            make_env,
            task,
            seed=None if seed is None else seed + i,
            max_episode_steps=max_episode_steps,
            goal_observable=goal_observable,
            **env_kwargs,
        )
        for i in range(num_envs)
    ]
    if vectorization_mode == "sync":
        return gym.vector.SyncVectorEnv(fns)
    if vectorization_mode == "async":
        return gym.vector.AsyncVectorEnv(fns)
    raise ValueError(
        f"vectorization_mode: expected 'sync' or 'async', found '{vectorization_mode}'"
    )


class ScriptedPolicy:
    """Meta-World's hand-written expert for one task, as ``obs [39] -> action [4]`` (float32, clipped
    to ``[-1, 1]``). It reads object and goal positions from the observation, so it needs
    ``goal_observable=True`` for tasks whose policy uses the goal (reach, push, pick-place, ...).
    """

    def __init__(self, task: str):
        self.task = check_task(task)
        self._policy = _registries()[1][task]()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        # a copy: some Meta-World scripted policies (button-press, door-open) edit the observation
        # in place, which would corrupt the states the caller records
        obs = np.array(obs, dtype=np.float64)
        if obs.shape != (OBS_DIM,):
            raise ValueError(
                f"ScriptedPolicy({self.task}): field 'obs': expected shape ({OBS_DIM},), found {obs.shape}"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
            action = self._policy.get_action(obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def __repr__(self) -> str:
        return f"ScriptedPolicy({self.task!r})"


def scripted_policy(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted expert of ``task`` (see :class:`ScriptedPolicy`)."""
    return ScriptedPolicy(task)
