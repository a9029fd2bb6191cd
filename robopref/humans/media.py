"""What the labelling page shows for one query item: a film strip PNG of image observations,
or an SVG plot of the end-effector path when the dataset has no images.

Both are produced with numpy and the standard library only (``zlib`` for PNG).
"""

from __future__ import annotations

import struct
import zlib
from html import escape

import numpy as np

from robopref.data import Trajectory

MAX_SIDE = 256  # frames larger than this are subsampled (nearest pixel) for the page


def find_image_key(trajectory: Trajectory) -> str | None:
    """The first (sorted) observation key holding uint8 images ``[T, H, W, C]`` (C in 1, 3, 4),
    or None for vector-only data."""
    obs = trajectory.observations
    if not isinstance(obs, dict):
        return None
    for key in sorted(obs):
        arr = obs[key]
        if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):
            return key
    return None


def encode_png(image: np.ndarray, level: int = 3) -> bytes:
    """PNG bytes of a uint8 image ``[H, W]``, ``[H, W, 1]`` (grey), ``[H, W, 3]`` (RGB) or
    ``[H, W, 4]`` (RGBA); 8 bits per channel, no interlacing."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"encode_png: expected uint8 [H, W(, C)], found {img.dtype} {img.shape}")
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    color_type = {1: 0, 3: 2, 4: 6}.get(c)
    if color_type is None or h == 0 or w == 0:
        raise ValueError(
            f"encode_png: expected 1, 3 or 4 channels and a non-empty image, found {img.shape}"
        )
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * c)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + chunk(b"IEND", b"")
    )


def film_strip(frames: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, int, int]:
    """Frames ``[n, H, W, C]`` stacked vertically into one image ``[n * h, w, C]``, each frame
    subsampled by an integer stride so that ``max(h, w) <= max_side``; returns
    ``(strip, h, w)`` (the size of one frame in the strip)."""
    frames = np.asarray(frames)
    stride = max(1, -(-max(frames.shape[1:3]) // max_side))
    small = frames[:, ::stride, ::stride]
    n, h, w, c = small.shape
    return np.ascontiguousarray(small.reshape(n * h, w, c)), h, w


def _views(dim: int) -> list[tuple[str, int, int]]:
    """(title, horizontal column, vertical column); column -1 is time."""
    if dim >= 3:
        return [("top view (x, y)", 0, 1), ("side view (x, z)", 0, 2)]
    if dim == 2:
        return [("(x, y)", 0, 1)]
    return [("x over time", -1, 0)]


def path_points(state: np.ndarray) -> np.ndarray:
    """End-effector path ``[T, min(3, obs_dim)]`` (the first three state columns, metres in
    Meta-World)."""
    state = np.asarray(state, dtype=np.float64)
    if state.ndim != 2 or state.shape[1] < 1:
        raise ValueError(f"path_points: expected state [T, obs_dim], found shape {state.shape}")
    return state[:, : min(3, state.shape[1])]


def path_svg(
    points: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    context: np.ndarray | None = None,
    size: int = 220,
    pad: int = 14,
) -> tuple[str, list[list[list[float]]]]:
    """An SVG of the path ``points [n, d]`` (d = 1..3) in one or two 2-D views.

    Args:
        points: the segment to show (bold line, a circle at its start, a square at its end).
        bounds: ``(low [d], high [d])`` shared by every item of the query, so that paths are
            drawn at the same scale.
        context: the whole trajectory ``[T, d]``, drawn as a faint line (optional).

    Returns:
        ``(svg text, cursor)`` where ``cursor[v][i]`` is the ``[x, y]`` pixel position of
        step ``i`` in view ``v``; the page moves a dot (class ``cursor``) along it.
    """
    points = np.asarray(points, dtype=np.float64)
    n, d = points.shape
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    span = np.where(high - low > 1e-9, high - low, 1.0)
    views = _views(d)
    width = len(views) * (size + pad) + pad
    height = size + 2 * pad + 14
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="path-plot">'
    ]
    cursor = []

    def project(p: np.ndarray, hx: int, vy: int, x0: int, steps: np.ndarray) -> np.ndarray:
        t_norm = steps / max(len(p) - 1, 1) if len(p) else steps
        u = t_norm if hx < 0 else (p[:, hx] - low[hx]) / span[hx]
        v = (p[:, vy] - low[vy]) / span[vy]
        return np.stack([x0 + u * size, pad + 14 + (1.0 - v) * size], axis=1)

    for i, (title, hx, vy) in enumerate(views):
        x0 = pad + i * (size + pad)
        parts.append(
            f'<rect x="{x0}" y="{pad + 14}" width="{size}" height="{size}" fill="#fafafa" '
            f'stroke="#bbb"/><text x="{x0}" y="{pad + 8}" font-size="11" '
            f'font-family="sans-serif">{escape(title)}</text>'
        )
        if context is not None and hx >= 0:
            ctx = project(np.asarray(context, dtype=np.float64), hx, vy, x0, np.zeros(len(context)))
            parts.append(_polyline(ctx, "#ccc", 1))
        xy = project(points, hx, vy, x0, np.arange(n, dtype=np.float64))
        parts.append(_polyline(xy, "#1f77b4", 2.5))
        parts.append(f'<circle cx="{xy[0, 0]:.1f}" cy="{xy[0, 1]:.1f}" r="4" fill="#2ca02c"/>')
        parts.append(
            f'<rect x="{xy[-1, 0] - 4:.1f}" y="{xy[-1, 1] - 4:.1f}" width="8" height="8" '
            f'fill="#d62728"/>'
        )
        parts.append(
            f'<circle class="cursor" data-view="{i}" cx="{xy[0, 0]:.1f}" cy="{xy[0, 1]:.1f}" '
            f'r="5" fill="none" stroke="#000" stroke-width="2"/>'
        )
        cursor.append(np.round(xy, 1).tolist())
    parts.append("</svg>")
    return "".join(parts), cursor


def _polyline(xy: np.ndarray, color: str, width: float) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    return (
        f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}" '
        f'stroke-linejoin="round"/>'
    )
