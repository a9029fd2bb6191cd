"""Contrastive Preference Learning (Hejna, Rafailov, Sikchi, Finn, Niekum, Knox and Sadigh,
ICLR 2024, arXiv 2310.13639): a policy learned straight from segment preferences, no reward model.

Under the regret (advantage) model of preferences, the optimal advantage of a maximum-entropy
policy is ``alpha log pi(a | s)``, so a segment's score is

    S(sigma) = sum_t gamma^t alpha log pi(a_t | s_t)

and the policy is fitted by the Bradley-Terry loss of the preferences on these scores. CPL's
conservative variant biases it against the dispreferred segment ``sigma-`` (``0 < lambda <= 1``):

    L = -log( exp(S(sigma+)) / (exp(S(sigma+)) + exp(lambda S(sigma-))) )

computed by the shared loss core (``pairwise_logistic_loss(..., bias=lambda)`` on the scores of
:func:`~robopref.losses.segment_return_scores`); lists of K > 2 segments sum the biased term
over every preferred pair. Training follows the reference code: the first ``bc_fraction`` of
the steps are behaviour cloning (``-log pi(a | s)`` on every transition of the data set), then
the optimiser is reset and the CPL loss (plus ``bc_weight`` times the BC loss) is minimised.
Defaults are the reference code's Meta-World state configs (``alpha 0.1``, ``lambda 0.5``,
``lr 1e-4``, BC for 200k of 500k steps, no BC term after it), with fewer steps.
"""

from __future__ import annotations

import torch
from pydantic import Field

from robopref import losses
from robopref.data import DataValidationError
from robopref.policies.offline.common import Batch, LearnerConfig, OfflineLearner, adam, adam_step
from robopref.rewards.segments import SegmentTensors


class CPLConfig(LearnerConfig):
    """CPL options (beyond :class:`~robopref.policies.offline.common.LearnerConfig`); the
    inherited ``batch_size`` counts the transitions of a BC batch."""

    lr: float = Field(1e-4, gt=0.0)
    """Adam learning rate (the reference code's 1e-4)."""
    query_batch: int = Field(64, ge=1)
    """Preference queries per CPL gradient step."""
    steps: int = Field(20_000, ge=1)
    """Total gradient steps, BC pre-training included."""
    alpha: float = Field(0.1, gt=0.0)
    """Temperature: the implicit advantage is ``alpha * log pi(a | s)``."""
    bias: float = Field(0.5, gt=0.0, le=1.0)
    """Conservative bias lambda on the dispreferred segment's score (1: plain Bradley-Terry)."""
    discount: float = Field(1.0, ge=0.0, le=1.0)
    """gamma of the segment score ``sum_t gamma^t alpha log pi`` (the reference sums, 1)."""
    bc_fraction: float = Field(0.4, ge=0.0, lt=1.0)
    """Share of ``steps`` spent on behaviour-cloning pre-training (reference: 200k of 500k)."""
    bc_weight: float = Field(0.0, ge=0.0)
    """Weight of the BC term added to the CPL loss after pre-training (reference: 0)."""
    loss: str = "bt"
    """Loss of the core on the segment scores; only the Bradley-Terry family takes ``bias``."""


def cpl_scores(
    log_probs: torch.Tensor, step_mask: torch.Tensor, alpha: float, discount: float = 1.0
) -> torch.Tensor:
    """Segment scores ``[B, K]`` = ``sum_t gamma^t alpha log pi(a_t | s_t)`` over valid steps
    of per-step log-probabilities ``[B, K, H]``."""
    H = log_probs.shape[-1]
    weights = alpha * discount ** torch.arange(H, dtype=log_probs.dtype, device=log_probs.device)
    return losses.segment_return_scores(log_probs * weights, step_mask)


def cpl_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    bias: float = 0.5,
    soft: bool = False,
    loss: str = "bt",
) -> torch.Tensor:
    """CPL's (biased) preference loss of segment scores ``[B, K]`` through the loss core."""
    name = loss.lower().replace("-", "_")
    if name in ("bt", "dpo", "pairwise_logistic"):
        return losses.pairwise_logistic_loss(scores, labels, mask, bias=bias, soft=soft)
    if bias != 1.0:
        raise ValueError(f"policy.cpl.loss: {loss!r} takes no bias; set policy.cpl.bias=1")
    return losses.get_loss(name)(scores, labels, mask)


class CPL(OfflineLearner):
    """CPL on a :class:`~robopref.policies.offline.buffer.TransitionBuffer` (BC batches) and
    the labelled segments set by :meth:`set_preferences` (CPL batches)."""

    NAME = "CPL"
    FORMAT = "robopref.cpl/1"
    LOSSES = ("cpl_loss", "bc_loss")
    config_cls = CPLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: CPLConfig | None = None):
        super().__init__(obs_dim, act_dim, config)
        self.opt = adam(list(self.actor.parameters()), self.config.lr, self.config.fused_adam)
        self.segments: SegmentTensors | None = None
        self.soft = False

    @property
    def bc_steps(self) -> int:
        return int(self.config.bc_fraction * self.config.steps)

    def set_preferences(self, segments: SegmentTensors, soft: bool = False) -> None:
        """The labelled segments CPL learns from (``gather_segments`` of the queries)."""
        if len(segments) == 0:
            raise DataValidationError("CPL: no labelled preference queries to learn from")
        if segments.obs.shape[-1] != self.obs_dim or segments.act.shape[-1] != self.act_dim:
            raise DataValidationError(
                f"CPL: segments 'obs'/'act': expected dims ({self.obs_dim}, {self.act_dim}), "
                f"found ({segments.obs.shape[-1]}, {segments.act.shape[-1]})"
            )
        self.segments = segments.to(self.device)
        self.soft = soft

    def _modules(self) -> dict:
        return {"actor": self.actor, "opt": self.opt}

    def _before_training(self, steps_to_run: int) -> None:
        if self.segments is None:
            raise RuntimeError("CPL.train: call set_preferences(segments) first")

    def segment_log_probs(self, seg: SegmentTensors) -> torch.Tensor:
        """``log pi(a_t | s_t)`` of every step of ``seg``, ``[B, K, H]``."""
        B, K, H, _ = seg.obs.shape
        lp = self.actor.log_prob(
            seg.obs.reshape(-1, self.obs_dim), seg.act.reshape(-1, self.act_dim)
        )
        return lp.reshape(B, K, H)

    def preference_loss(self, seg: SegmentTensors) -> torch.Tensor:
        """The CPL loss of a batch of labelled segments."""
        cfg: CPLConfig = self.config
        scores = cpl_scores(self.segment_log_probs(seg), seg.step_mask, cfg.alpha, cfg.discount)
        return cpl_loss(
            scores, seg.labels, seg.item_mask, bias=cfg.bias, soft=self.soft, loss=cfg.loss
        )

    def _step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg: CPLConfig = self.config
        bc_loss = -self.actor.log_prob(batch.obs, batch.act).mean()
        if self.step < self.bc_steps:
            loss, pref_loss = bc_loss, bc_loss.new_zeros(())
        else:
            if self.step == self.bc_steps and self.bc_steps > 0:
                # as the reference code: a fresh optimiser once BC pre-training ends
                self.opt = adam(list(self.actor.parameters()), cfg.lr, cfg.fused_adam)
            seg = self.segments
            idx = torch.randint(0, len(seg), (cfg.query_batch,), generator=self.sample_gen)
            pref_loss = self.preference_loss(seg[idx.to(self.device)])
            loss = pref_loss + cfg.bc_weight * bc_loss if cfg.bc_weight else pref_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        adam_step(self.opt)
        return torch.stack([pref_loss.detach(), bc_loss.detach()]), {}

    @torch.no_grad()
    def implicit_scores(self, seg: SegmentTensors, batch_size: int = 256) -> torch.Tensor:
        """Segment scores ``[Q, K]`` of the implicit reward ``alpha log pi`` (for accuracy)."""
        cfg: CPLConfig = self.config
        out = []
        for i in range(0, len(seg), batch_size):
            part = seg[i : i + batch_size].to(self.device)
            lp = self.segment_log_probs(part)
            out.append(cpl_scores(lp, part.step_mask, cfg.alpha, cfg.discount).cpu())
        return torch.cat(out) if out else torch.zeros(0, seg.obs.shape[1])
