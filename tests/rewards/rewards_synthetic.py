"""Synthetic preference data with a known ground-truth reward, labelled by an oracle."""

from __future__ import annotations

import numpy as np

from robopref.data import (
    PreferenceQueries,
    Trajectory,
    TrajectoryDataset,
    sample_queries,
    segment_rewards,
)

OBS_DIM, ACT_DIM, T = 4, 2, 40
W = np.array([1.0, -0.5, 0.3, 0.0])


def linear_reward(obs: np.ndarray) -> np.ndarray:
    return obs @ W


def nonlinear_reward(obs: np.ndarray) -> np.ndarray:
    return -np.linalg.norm(obs[..., :2] - np.array([0.5, -0.5]), axis=-1) + 0.5 * np.sin(
        2 * obs[..., 2]
    )


def make_dataset(reward=linear_reward, n: int = 120, seed: int = 0) -> TrajectoryDataset:
    """``n`` random-walk trajectories of T steps; rewards from the ground truth ``reward(obs)``."""
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n):
        obs = rng.normal(size=OBS_DIM) + np.cumsum(0.3 * rng.normal(size=(T, OBS_DIM)), axis=0)
        act = rng.normal(size=(T, ACT_DIM))
        trajs.append(Trajectory(obs, act, reward(obs), task="synthetic"))
    return TrajectoryDataset(trajs)


def oracle(dataset, queries: PreferenceQueries, kind: str = "graded") -> PreferenceQueries:
    """Label by ground-truth segment return: graded ranks (K-1 best ... 0 worst) or, for pairs,
    soft Boltzmann labels y = sigmoid(R_0 - R_1)."""
    ret = np.array([[seg.sum() for seg in row] for row in segment_rewards(dataset, queries)])
    if kind == "soft_pair":
        y = 1 / (1 + np.exp(-(ret[:, 0] - ret[:, 1])))
        labels = np.stack([y, 1 - y], axis=1)
    else:
        labels = ret.argsort(1).argsort(1).astype(float)
    return PreferenceQueries(
        queries.traj_index,
        queries.start,
        queries.length,
        labels,
        queries.mask,
        label_kind=kind,
        teacher="oracle",
    )


def make_queries(dataset, n, k=2, ids=None, kind="graded", seed=0, segment_length=10):
    q = sample_queries(
        dataset, n, k, segment_length, np.random.default_rng(seed), trajectory_ids=ids
    )
    return oracle(dataset, q, kind)


TRAIN_IDS = np.arange(0, 80)
TEST_IDS = np.arange(80, 120)
