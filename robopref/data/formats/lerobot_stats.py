"""LeRobot's normalisation statistics: ``meta/stats.json`` and the per-episode ``stats/...``
columns of ``meta/episodes``.

LeRobot (0.4 and later) computes, for every feature of every episode, ``min``, ``max``,
``mean``, ``std``, ``count`` and the quantiles ``q01``, ``q10``, ``q50``, ``q90``, ``q99`` over
the frames (per dimension; images per channel, scaled to [0, 1], shape ``[3, 1, 1]``), then
aggregates the episodes: min of mins, max of maxes, count-weighted mean, the pooled variance,
count-weighted quantiles. This module does the same with the same arithmetic (the same dtypes,
the 5000-bin histogram quantiles with linear interpolation inside a bin, images sampled and
downsampled as LeRobot samples them), so that a policy trained by LeRobot on an exported folder
normalises exactly as on a folder LeRobot recorded. One deliberate difference: LeRobot squares
uint8 pixels in uint8, which wraps, so its image ``std`` is too small; here it is the true
per-channel standard deviation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
_BINS = 5000
STAT_KEYS = ("min", "max", "mean", "std", "count") + tuple(
    f"q{int(q * 100):02d}" for q in QUANTILES
)


def _sample_indices(n: int) -> np.ndarray:
    """LeRobot's frame sample of an image feature: all frames up to 100, then ``n ** 0.75``
    evenly spaced (at most 10000)."""
    k = n if n < 100 else max(100, min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, k)).astype(int)


def _downsample(frames: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` frames of 300 pixels or more on a side, strided to about 150."""
    h, w = frames.shape[2:]
    if max(h, w) < 300:
        return frames
    step = int(w / 150) if w > h else int(h / 150)
    return frames[:, :, ::step, ::step]


def _quantile(hist: np.ndarray, edges: np.ndarray, target: float) -> Any:
    cum = np.cumsum(hist)
    i = int(np.searchsorted(cum, target))
    if i == 0:
        return edges[0]
    if i >= len(cum):
        return edges[-1]
    before = cum[i - 1]
    inside = cum[i] - before
    if inside == 0:
        return edges[i]
    return edges[i] + (target - before) / inside * (edges[i + 1] - edges[i])


def _stats_of_rows(rows: np.ndarray, count: int, wide: bool) -> dict[str, np.ndarray]:
    """Stats of ``rows [N, d]`` per column; ``wide`` computes the squares in float64."""
    n = len(rows)
    out: dict[str, Any] = {"min": rows.min(axis=0), "max": rows.max(axis=0)}
    mean = np.mean(rows, axis=0)
    out["mean"] = mean
    if n < 2:  # LeRobot: no quantiles of fewer than 2 rows; they are the mean
        out["std"] = np.std(rows, axis=0)
        out["count"] = np.array([count])
        for q in QUANTILES:
            out[f"q{int(q * 100):02d}"] = mean.copy()
        return out
    squares = rows.astype(np.float64) ** 2 if wide else rows**2
    var = np.mean(squares, axis=0) - mean**2
    out["std"] = np.sqrt(np.maximum(0, var))
    out["count"] = np.array([count])
    lo, hi = out["min"], out["max"]
    cols = []
    for j in range(rows.shape[1]):
        edges = np.linspace(lo[j] - 1e-10, hi[j] + 1e-10, _BINS + 1)
        col = rows[:, j].astype(np.uint8) if rows.dtype == np.bool_ else rows[:, j]
        hist, _ = np.histogram(col, bins=edges)
        cols.append((hist, edges))
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = np.array([_quantile(h, e, q * n) for h, e in cols])
    return out


def feature_stats(values: np.ndarray, image: bool) -> dict[str, np.ndarray]:
    """The statistics of one feature over one episode, as LeRobot stores them.

    Args:
        values: ``[T, ...]`` the feature's frames (``[T]`` or ``[T, d]`` low-dim values;
            ``[T, H, W, C]`` uint8 images).
        image: an image or video feature (per-channel stats of the sampled frames, in [0, 1],
            shape ``[C, 1, 1]``).
    """
    if image:
        frames = _downsample(np.moveaxis(values[_sample_indices(len(values))], -1, 1))
        rows = frames.transpose(0, 2, 3, 1).reshape(-1, frames.shape[1])
        stats = _stats_of_rows(rows, len(frames), wide=True)
        return {
            k: v if k == "count" else np.asarray(v / 255.0).reshape(-1, 1, 1)
            for k, v in stats.items()
        }
    rows = values.reshape(-1, 1) if values.ndim == 1 else values.reshape(-1, values.shape[-1])
    return _stats_of_rows(rows, len(values), wide=False)


def aggregate(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's statistics over several episodes (LeRobot's ``aggregate_feature_stats``)."""
    means = np.stack([s["mean"] for s in episodes])
    variances = np.stack([s["std"] ** 2 for s in episodes])
    counts = np.stack([s["count"] for s in episodes])
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, -1)
    mean = (means * counts).sum(axis=0) / total
    var = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
    out = {
        "min": np.min(np.stack([s["min"] for s in episodes]), axis=0),
        "max": np.max(np.stack([s["max"] for s in episodes]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": total,
    }
    for key in STAT_KEYS[5:]:
        out[key] = (np.stack([s[key] for s in episodes]) * counts).sum(axis=0) / total
    return out


def to_json(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    """Nested lists, as LeRobot writes ``meta/stats.json`` and the ``stats/...`` columns."""
    return {k: np.asarray(v).tolist() for k, v in stats.items()}
