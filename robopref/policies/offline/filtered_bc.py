"""Return-filtered behaviour cloning: BC on the best episodes by *learned* return.

The episodes of the buffer are ranked by their return under the relabelled (learned) reward,
``TransitionBuffer.episode_returns`` (summed over all ``T`` steps of each trajectory); the top
``ceil(top_fraction * E)`` of the ``E`` episodes that have transitions (at least
``min_episodes``) are kept, and a Gaussian policy is fitted to their actions by maximum
likelihood, ``L = -E[ log pi(a | s) ]``. Ties in return keep the lower episode index (stable
sort), so the selection is deterministic. No value function, no bootstrapping: the cheapest
learner per step (one MLP), and only as good as the ranking the reward gives the episodes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from robopref.data import DataValidationError
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.policies.offline.common import Batch, LearnerConfig, OfflineLearner, adam, adam_step


class FilteredBCConfig(LearnerConfig):
    """Filtered-BC options (beyond :class:`~robopref.policies.offline.common.LearnerConfig`)."""

    top_fraction: float = Field(0.1, gt=0.0, le=1.0)
    """Share of episodes kept, by learned return."""
    min_episodes: int = Field(1, ge=1)
    """Keep at least this many episodes."""


def select_episodes(
    episode_returns: np.ndarray, present: np.ndarray, top_fraction: float, min_episodes: int = 1
) -> np.ndarray:
    """Indices of the kept episodes, best first.

    Args:
        episode_returns: ``[E]`` return of each episode.
        present: ``[E]`` bool, episodes that have transitions (others cannot be kept).
        top_fraction: keep ``ceil(top_fraction * present.sum())`` episodes ...
        min_episodes: ... but at least this many (at most all present ones).
    """
    candidates = np.flatnonzero(present)
    if len(candidates) == 0:
        raise DataValidationError("filtered_bc: no episode has transitions")
    k = min(len(candidates), max(min_episodes, math.ceil(top_fraction * len(candidates))))
    order = np.argsort(-episode_returns[candidates], kind="stable")
    return candidates[order[:k]]


class FilteredBC(OfflineLearner):
    """Behaviour cloning on the top ``top_fraction`` of episodes by learned return.

    After :meth:`train`, ``selected_episodes`` holds the kept episode indices (best first).
    """

    NAME = "FilteredBC"
    FORMAT = "robopref.filtered_bc/1"
    LOSSES = ("actor_loss",)
    config_cls = FilteredBCConfig

    def __init__(self, obs_dim: int, act_dim: int, config: FilteredBCConfig | None = None):
        super().__init__(obs_dim, act_dim, config)
        self.opt = adam(list(self.actor.parameters()), self.config.lr, self.config.fused_adam)
        self.selected_episodes: np.ndarray | None = None

    def _modules(self) -> dict:
        return {"actor": self.actor, "opt": self.opt}

    def _train_rows(self, buffer: TransitionBuffer) -> np.ndarray:
        cfg: FilteredBCConfig = self.config
        present = np.zeros(len(buffer.episode_returns), dtype=bool)
        present[buffer.episode] = True
        self.selected_episodes = select_episodes(
            buffer.episode_returns, present, cfg.top_fraction, cfg.min_episodes
        )
        return np.flatnonzero(np.isin(buffer.episode, self.selected_episodes))

    def _step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        actor_loss = -self.actor.log_prob(batch.obs, batch.act).mean()
        self.opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        adam_step(self.opt)
        return actor_loss.detach()[None], {}
