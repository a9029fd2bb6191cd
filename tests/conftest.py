"""Test-wide settings: offscreen MuJoCo rendering on the CPU unless the caller chose a backend."""

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

# Tests run one after another; one torch thread avoids oversubscribing small CI machines (two
# torch threads beside any other busy process made small-network steps 20-50x slower here).
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a core dependency
    pass
