"""Pixel observations for Meta-World: fast offscreen rendering and rendering of saved datasets.

:class:`FrameRenderer` draws the current state of a Meta-World env with one reused
``mujoco.Renderer`` (not gymnasium's ``env.render()``). In ``fast`` mode (default) it turns off
shadows, reflections and the skybox and uses no multisampling (``offsamples = 0``): with the
CPU backend (``MUJOCO_GL=osmesa``) this is ~13x faster than ``env.render()`` at 64x64 (see
docs/rooms/rapl.md, ``benchmarks/render.py``). Meta-World's corner cameras are mounted upside
down; ``flip=True`` (default) turns the image the right way up.

Frames live in the dataset as ``observations["image"]`` ``[T, H, W, 3]`` uint8 beside
``observations["state"]`` ``[T, 39]``: frame t shows the scene *before* action t, like
``state[t]``. With ``frame_stride = s`` only steps ``0, s, 2s, ...`` are rendered and each frame
is held for the following ``s - 1`` steps (so ``image`` keeps T entries and ``image[::s]`` is the
strided video); ``metadata["image_stride"]`` records ``s``.

:func:`render_dataset` adds frames to an existing state-only dataset by replaying each episode
from its metadata ``seed`` and its ``actions`` (episodes are deterministic given both); the
replayed states are checked against the stored ones.
"""

from __future__ import annotations

import dataclasses
import os

import gymnasium as gym
import numpy as np
from pydantic import Field

from robopref.config import StrictModel
from robopref.data import DataValidationError, Trajectory, TrajectoryDataset
from robopref.envs.tasks import make_env

CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")


class RenderConfig(StrictModel):
    """How frames are rendered."""

    camera: str | int = "corner2"
    """A Meta-World camera name (:data:`CAMERAS`) or id."""
    width: int = Field(64, ge=8, le=1024)
    """Image width in pixels."""
    height: int = Field(64, ge=8, le=1024)
    """Image height in pixels."""
    frame_stride: int = Field(1, ge=1)
    """Render every ``frame_stride``-th step (held in between)."""
    fast: bool = True
    """No shadows, reflections, skybox or multisampling (much faster on the CPU)."""
    flip: bool = True
    """Turn the image upside down (Meta-World's corner cameras are mounted inverted)."""


def _ensure_backend() -> None:
    # MuJoCo picks its GL backend at first import of mujoco.Renderer; without a display the
    # default (glfw) fails, so fall back to software rendering.
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "osmesa"
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


class FrameRenderer:
    """Renders the current scene of a Meta-World env (``make_env``) as ``[H, W, 3]`` uint8.

    One ``mujoco.Renderer`` is created per instance and reused; call :meth:`close` (or use it
    as a context manager) to free its GL context.
    """

    def __init__(self, env: gym.Env, config: RenderConfig | None = None) -> None:
        _ensure_backend()
        import mujoco

        self.config = cfg = config if config is not None else RenderConfig()
        raw = env.unwrapped
        self.model, self.data = raw.model, raw.data
        if isinstance(cfg.camera, str):
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cfg.camera) < 0:
                raise ValueError(
                    f"camera: expected one of {CAMERAS} or an id, found {cfg.camera!r}"
                )
        elif not 0 <= cfg.camera < self.model.ncam:
            raise ValueError(
                f"camera: expected an id in [0, {self.model.ncam}), found {cfg.camera}"
            )
        old = self.model.vis.quality.offsamples
        if cfg.fast:
            self.model.vis.quality.offsamples = 0
        # The offscreen buffer must hold the image.
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, cfg.width)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, cfg.height)
        try:
            self._renderer = mujoco.Renderer(self.model, cfg.height, cfg.width)
        finally:
            self.model.vis.quality.offsamples = old
        if cfg.fast:
            flags = self._renderer.scene.flags
            for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
                flags[getattr(mujoco.mjtRndFlag, flag)] = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.config.height, self.config.width, 3)

    def render(self) -> np.ndarray:
        """The current frame ``[H, W, 3]`` uint8."""
        self._renderer.update_scene(self.data, camera=self.config.camera)
        frame = self._renderer.render()
        return np.ascontiguousarray(frame[::-1]) if self.config.flip else frame.copy()

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def replay_frames(
    env: gym.Env,
    renderer: FrameRenderer,
    seed: int,
    actions: np.ndarray,
    states: np.ndarray | None = None,
    atol: float = 1e-4,
) -> np.ndarray:
    """Replay ``actions [T, 4]`` from ``env.reset(seed=seed)`` and return ``[T, H, W, 3]`` uint8
    frames (frame t before action t; strided and held per ``renderer.config.frame_stride``).

    ``states [T, 39]``, when given, are compared with the replayed observations; a difference
    above ``atol`` raises :class:`~robopref.data.DataValidationError` (not a replayable episode).
    """
    actions = np.asarray(actions)
    T, stride = len(actions), renderer.config.frame_stride
    frames = np.empty((T, *renderer.shape), dtype=np.uint8)
    obs, _ = env.reset(seed=int(seed))
    for t in range(T):
        if states is not None and np.abs(obs - states[t]).max() > atol:
            raise DataValidationError(
                f"replay (seed {seed}): field 'state' at step {t}: expected the stored state, "
                f"found a difference of {np.abs(obs - states[t]).max():.2e} > atol={atol}"
            )
        frames[t] = renderer.render() if t % stride == 0 else frames[t - 1]
        obs, *_ = env.step(actions[t])
    return frames


def render_trajectory(
    traj: Trajectory,
    env: gym.Env,
    renderer: FrameRenderer,
    check_states: bool = True,
) -> Trajectory:
    """A copy of ``traj`` whose observations are ``{"state": ..., "image": [T, H, W, 3]}``."""
    if "seed" not in traj.metadata:
        raise DataValidationError(
            f"trajectory of task '{traj.task}': field 'metadata/seed': expected the reset seed "
            "of the episode, found none (only collected episodes can be replayed)"
        )
    state = traj.state
    frames = replay_frames(
        env, renderer, traj.metadata["seed"], traj.actions, state if check_states else None
    )
    obs = dict(traj.observations) if isinstance(traj.observations, dict) else {"state": state}
    obs["image"] = frames
    meta = dict(
        traj.metadata,
        image_stride=renderer.config.frame_stride,
        camera=renderer.config.camera,
    )
    return dataclasses.replace(traj, observations=obs, metadata=meta)


def render_dataset(
    dataset: TrajectoryDataset,
    config: RenderConfig | None = None,
    max_episode_steps: int | None = None,
    goal_observable: bool = True,
    check_states: bool = True,
    progress: bool = False,
) -> TrajectoryDataset:
    """Add ``"image"`` frames to every trajectory of a collected dataset by replaying it.

    Args:
        dataset: trajectories with ``metadata["seed"]`` (as written by
            :func:`robopref.envs.collect_dataset`) and actions.
        config: :class:`RenderConfig`.
        max_episode_steps: env time limit (default: the longest trajectory).
        goal_observable: as in :func:`make_env` (must match the collection, for the state check).
        check_states: compare the replayed states with the stored ones.

    Returns:
        a new dataset (same order) with dict observations ``{"state", "image"}``.
    """
    cfg = config if config is not None else RenderConfig()
    horizon = max_episode_steps or max((len(t) for t in dataset), default=1)
    envs: dict[str, tuple[gym.Env, FrameRenderer]] = {}
    out = []
    try:
        from robopref.progress import track

        for traj in track(dataset, "render", unit="ep", enabled=progress):
            if traj.task not in envs:
                env = make_env(traj.task, seed=0, max_episode_steps=horizon,
                               goal_observable=goal_observable)  # fmt: skip
                envs[traj.task] = (env, FrameRenderer(env, cfg))
            env, renderer = envs[traj.task]
            out.append(render_trajectory(traj, env, renderer, check_states))
    finally:
        for env, renderer in envs.values():
            renderer.close()
            env.close()
    return TrajectoryDataset(out, dataset.queries, dict(dataset.metadata, render=cfg.model_dump()))


def strided_video(traj: Trajectory) -> np.ndarray:
    """The rendered frames of ``traj`` without the held copies: ``image[::image_stride]``."""
    if not isinstance(traj.observations, dict) or "image" not in traj.observations:
        raise DataValidationError(
            f"trajectory of task '{traj.task}': field 'obs/image': expected [T, H, W, 3] frames, "
            "found none (render the dataset with robopref.envs.render_dataset)"
        )
    return traj.observations["image"][:: int(traj.metadata.get("image_stride", 1))]


def collect_pixel_dataset(collect, config: RenderConfig | None = None, progress: bool = False):
    """:func:`robopref.envs.collect_dataset` of ``collect`` (a ``CollectConfig``), then
    :func:`render_dataset` with ``config``: a dataset with ``{"state", "image"}`` observations."""
    from robopref.envs.collect import collect_dataset

    states = collect_dataset(collect, progress=progress)
    return render_dataset(
        states,
        config,
        max_episode_steps=collect.max_episode_steps,
        goal_observable=collect.goal_observable,
        progress=progress,
    )
