"""Optimal-transport feature-matching rewards (RAPL, Tian et al. 2024; ROT, Haldar et al. 2023).

A rollout video of n frames and an expert demo of m frames, embedded as ``x [n, d]`` and
``y [m, d]``, are compared through the cosine cost ``C_tj = 1 - cos(x_t, y_j)`` (in [0, 2])
and the entropic OT plan ``P`` between uniform weights (Sinkhorn, :mod:`robopref.ot`). The
reward of frame t is ``r_t = -scale * sum_j P_tj C_tj``; with the default ``scale = n`` it is the
plan-weighted mean cost of frame t's matches, in [-2, 0], and the video's total
``sum_t r_t = -n <P, C>``. With several demos, the demo whose total is highest (the closest)
gives the rewards.

Plain OT between frame sets ignores time order (a time-reversed video matches a demo exactly as
well). ``time_weight > 0`` adds ``time_weight * |t / (n - 1) - j / (m - 1)|`` to the cost, which
makes the plan prefer temporally aligned matches (the cost used for the plan and the reward is
then the sum of both terms). RAPL's reward uses ``time_weight = 0`` (the default).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from robopref.ot import sinkhorn


def _check_frames(name: str, x, ndim: int = 2) -> None:
    if x.ndim < ndim or x.shape[-2] == 0:
        raise ValueError(f"{name}: expected shape [..., n, d] with n >= 1, found {tuple(x.shape)}")


def cosine_cost(x, y, time_weight: float = 0.0):
    """Cosine cost ``C [..., n, m]`` between frame embeddings ``x [..., n, d]``, ``y [..., m, d]``.

    ``C_tj = 1 - cos(x_t, y_j)`` (+ ``time_weight * |t/(n-1) - j/(m-1)|``). numpy in, numpy out
    (float64); torch in, torch out (differentiable).
    """
    _check_frames("x", x)
    _check_frames("y", y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"y: expected embedding size {x.shape[-1]} (x's last dim), found {y.shape[-1]}"
        )
    n, m = x.shape[-2], y.shape[-2]
    if isinstance(x, torch.Tensor):
        xn = torch.nn.functional.normalize(x, dim=-1, eps=1e-8)
        yn = torch.nn.functional.normalize(y.to(x), dim=-1, eps=1e-8)
        C = (1.0 - xn @ yn.transpose(-1, -2)).clamp_min(0.0)
        if time_weight:
            tn = (
                torch.linspace(0, 1, n, dtype=x.dtype, device=x.device) if n > 1 else x.new_zeros(1)
            )
            tm = (
                torch.linspace(0, 1, m, dtype=x.dtype, device=x.device) if m > 1 else x.new_zeros(1)
            )
            C = C + time_weight * (tn[:, None] - tm[None, :]).abs()
        return C
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
    yn = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-8)
    C = np.maximum(1.0 - xn @ np.swapaxes(yn, -1, -2), 0.0)
    if time_weight:
        tn = np.linspace(0, 1, n) if n > 1 else np.zeros(1)
        tm = np.linspace(0, 1, m) if m > 1 else np.zeros(1)
        C = C + time_weight * np.abs(tn[:, None] - tm[None, :])
    return C


def ot_frame_rewards(
    x: np.ndarray,
    y: np.ndarray,
    eps: float = 0.05,
    scale: float | None = None,
    time_weight: float = 0.0,
    max_iter: int = 5000,
) -> np.ndarray:
    """Per-frame OT rewards ``[n]`` of rollout embeddings ``x [n, d]`` against one demo ``y [m, d]``.

    ``r_t = -scale * sum_j P_tj C_tj`` with ``P`` the entropic plan (``eps`` in cost units) and
    ``scale`` = n by default. Uses the Numba Sinkhorn engine (float64).
    """
    C = cosine_cost(np.asarray(x), np.asarray(y), time_weight)
    with warnings.catch_warnings():
        # small eps on near-duplicate frames converges slowly; a 1e-4 marginal error is harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        P = sinkhorn(None, None, C, eps, max_iter=max_iter, tol=1e-6)
    scale = float(C.shape[0]) if scale is None else float(scale)
    return -scale * (P * C).sum(-1)


def ot_rewards(
    x: np.ndarray,
    demos: Sequence[np.ndarray],
    eps: float = 0.05,
    scale: float | None = None,
    time_weight: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Per-frame rewards ``[n]`` of ``x [n, d]`` against the closest of ``demos`` (``[m_i, d]``
    each): the demo giving the highest total reward. Returns ``(rewards, demo_index)``."""
    if len(demos) == 0:
        raise ValueError("demos: expected at least one demo embedding, found 0")
    best, best_i = None, -1
    for i, y in enumerate(demos):
        r = ot_frame_rewards(x, y, eps=eps, scale=scale, time_weight=time_weight)
        if best is None or r.sum() > best.sum():
            best, best_i = r, i
    return best, best_i


def ot_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 0.05,
    time_weight: float = 0.0,
    max_iter: int = 100,
) -> torch.Tensor:
    """Differentiable entropic OT cost ``<P, C>`` ``[...]`` between ``x [..., n, d]`` and
    ``y [..., m, d]`` (cosine cost, uniform weights; batched over leading dims).

    Gradients flow through the plan (unrolled log-domain Sinkhorn of :mod:`robopref.ot`);
    ``max_iter`` bounds the unrolled iterations (a warning is raised if it is reached).
    """
    C = cosine_cost(x, y, time_weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a truncated unroll is fine for training
        P = sinkhorn(None, None, C, eps, max_iter=max_iter, tol=1e-4)
    return (P * C).sum((-1, -2))


class OTReward:
    """The OT feature-matching reward of a frame encoder and expert demo videos.

    Args:
        embed: ``frames [N, H, W, 3] uint8 -> embeddings [N, d]`` numpy (e.g.
            :meth:`robopref.rewards.visual.VisualEncoder.embed`).
        demo_frames: expert videos, ``[m_i, H, W, 3]`` uint8 each.
        eps, scale, time_weight: see :func:`ot_frame_rewards`.
        affine: ``(a, b)``: the returned reward is ``a * r_t + b`` (``a > 0``); an RL agent gets
            rewards on a useful scale without changing their order (see :func:`affine_to_range`).

    ``reward(frames [n, H, W, 3]) -> [n]``; ``total(frames) -> float``.
    """

    def __init__(
        self,
        embed,
        demo_frames: Sequence[np.ndarray],
        eps: float = 0.05,
        scale: float | None = None,
        time_weight: float = 0.0,
        affine: tuple[float, float] = (1.0, 0.0),
    ) -> None:
        if len(demo_frames) == 0:
            raise ValueError("demo_frames: expected at least one demo video, found 0")
        if not affine[0] > 0:
            raise ValueError(f"affine: expected a positive scale a in (a, b), found {affine}")
        self.embed = embed
        self.eps, self.scale, self.time_weight = eps, scale, time_weight
        self.affine = (float(affine[0]), float(affine[1]))
        self.demos = [np.asarray(embed(np.asarray(f)), dtype=np.float64) for f in demo_frames]

    def reward_from_embeddings(self, x: np.ndarray) -> np.ndarray:
        r = ot_rewards(x, self.demos, self.eps, self.scale, self.time_weight)[0]
        return self.affine[0] * r + self.affine[1]

    def reward(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame rewards ``[n]`` of a video ``frames [n, H, W, 3]``."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or len(frames) == 0:
            raise ValueError(f"frames: expected [n, H, W, 3] with n >= 1, found {frames.shape}")
        return self.reward_from_embeddings(np.asarray(self.embed(frames), dtype=np.float64))

    def total(self, frames: np.ndarray) -> float:
        return float(self.reward(frames).sum())


def affine_to_range(
    rewards: np.ndarray, low: float = 0.0, high: float = 10.0, quantiles=(0.05, 0.95)
) -> tuple[float, float]:
    """``(a, b)`` mapping the ``quantiles`` of ``rewards`` (any shape) to ``low`` and ``high``.

    Learned rewards come on arbitrary scales (OT rewards in [-2, 0] with differences of a few
    hundredths); SAC's entropy bonus then dominates them. An increasing affine map keeps every
    ranking and Spearman correlation and puts the reward on the scale of Meta-World's own
    ([0, 10] per step).
    """
    r = np.asarray(rewards, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    if len(r) < 2:
        raise ValueError(f"rewards: expected at least 2 finite values, found {len(r)}")
    lo, hi = np.quantile(r, quantiles)
    if not hi > lo:
        raise ValueError(
            f"rewards: expected a spread between the {quantiles} quantiles, found {lo} and {hi}"
        )
    a = (high - low) / (hi - lo)
    return float(a), float(low - a * lo)
