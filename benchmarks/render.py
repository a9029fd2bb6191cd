"""Frames per second of Meta-World pixel rendering: robopref's FrameRenderer vs ``env.render()``.

Rows, all on the same task, camera and image size, stepping the env with random actions between
frames (one MuJoCo step per frame; the step alone is ~0.25 ms, so the rows measure rendering):

* ``gymnasium env.render()``: Meta-World's env made with ``render_mode="rgb_array"``
  (gymnasium's ``MujocoRenderer``, Meta-World's default visual settings). **The peer.**
* ``mujoco.Renderer, default flags``: one reused ``mujoco.Renderer`` on the env's model and data,
  Meta-World's visual settings (4x multisampling, shadows, reflections, skybox).
* ``FrameRenderer (fast)``: :class:`robopref.envs.render.FrameRenderer` -- one reused
  ``mujoco.Renderer`` without multisampling, shadows, reflections or skybox (the default).

Two rates per row: frames per wall-clock second and per CPU second (``resource.getrusage``; on a
shared machine the CPU rate is the stable measure). The first frames (context creation, texture
upload) are excluded by ``--warmup``; each row keeps the best of ``--repeats``.

Usage (defaults are small; the machine is shared)::

    MUJOCO_GL=osmesa python benchmarks/render.py --sizes 64 112 --frames 100
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import numpy as np  # noqa: E402

from robopref.envs import make_env  # noqa: E402
from robopref.envs.render import FrameRenderer, RenderConfig  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _time(env, render, frames: int, warmup: int, repeats: int) -> tuple[float, float]:
    for _ in range(warmup):
        env.step(env.action_space.sample())
        render()
    best = (0.0, 0.0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu()
        for _ in range(frames):
            env.step(env.action_space.sample())
            frame = render()
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        assert frame.dtype == np.uint8 and frame.ndim == 3
        rates = (frames / wall, frames / max(cpu, 1e-9))
        best = max(best, rates, key=lambda r: r[1])
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", default="button-press-v3")
    p.add_argument("--camera", default="corner2")
    p.add_argument("--sizes", type=int, nargs="+", default=[64])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    print(f"MUJOCO_GL={os.environ['MUJOCO_GL']}  {platform.processor() or platform.machine()}  "
          f"{os.cpu_count()} cores  task={args.task} camera={args.camera}")  # fmt: skip
    print(f"{'size':>5}  {'row':<32} {'fps wall':>9} {'fps cpu':>9} {'x peer (cpu)':>12}")
    for size in args.sizes:
        rows = []
        env = make_env(args.task, seed=0, max_episode_steps=10**6, render_mode="rgb_array",
                       camera=args.camera, width=size, height=size)  # fmt: skip
        env.reset(seed=0)
        rows.append(("gymnasium env.render()", _time(env, env.render, args.frames, args.warmup,
                                                     args.repeats)))  # fmt: skip
        env.close()
        for fast, name in (
            (False, "mujoco.Renderer, default flags"),
            (True, "FrameRenderer (fast)"),
        ):
            env = make_env(args.task, seed=0, max_episode_steps=10**6)
            env.reset(seed=0)
            cfg = RenderConfig(camera=args.camera, width=size, height=size, fast=fast)
            with FrameRenderer(env, cfg) as r:
                rows.append((name, _time(env, r.render, args.frames, args.warmup, args.repeats)))
            env.close()
        peer = rows[0][1][1]
        for name, (wall, cpu) in rows:
            print(f"{size:>5}  {name:<32} {wall:>9.1f} {cpu:>9.1f} {cpu / peer:>11.1f}x")


if __name__ == "__main__":
    main()
