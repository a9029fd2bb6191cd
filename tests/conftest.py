"""Test-wide settings: offscreen MuJoCo rendering on the CPU unless the caller chose a backend."""

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
