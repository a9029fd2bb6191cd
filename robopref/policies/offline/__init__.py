"""Offline learners on a :class:`TransitionBuffer` (all subclasses of
:class:`~robopref.policies.offline.common.OfflineLearner`, same ``train`` / ``act`` / ``save`` / ``load``):
``iql`` (:class:`IQL`), ``awr`` (:class:`AWR`), ``filtered_bc`` (:class:`FilteredBC`) and ``cpl``
(:class:`CPL`, straight from segment preferences: give it the labelled segments with
``set_preferences`` before ``train``). A recipe
selects one with a :class:`PolicyConfig` (``policy.name`` plus one options block per learner)
and builds it with :func:`make_learner`. ``robopref.policies.lm`` (language policies; imports
transformers, so it is not imported here) and ``robopref.policies.vla`` (tokenised-action VLAs).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from robopref.config import StrictModel
from robopref.policies.offline.awr import AWR, AWRConfig, awr_weights
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.policies.offline.common import LearnerConfig, NonFiniteLossError, OfflineLearner
from robopref.policies.offline.cpl import CPL, CPLConfig, cpl_loss, cpl_scores
from robopref.policies.offline.filtered_bc import FilteredBC, FilteredBCConfig, select_episodes
from robopref.policies.offline.iql import IQL, IQLConfig, expectile_loss

LEARNERS: dict[str, type[OfflineLearner]] = {
    "iql": IQL,
    "awr": AWR,
    "filtered_bc": FilteredBC,
    "cpl": CPL,
}


class PolicyConfig(StrictModel):
    """Which offline learner a recipe trains (``name``) and each learner's own options.

    Only the block named by ``name`` is used; the others keep their defaults so that switching
    learners is one override (``policy.name=awr``).
    """

    name: Literal["iql", "awr", "filtered_bc", "cpl"] = "iql"
    """The learner to train."""
    iql: IQLConfig = Field(default_factory=IQLConfig)
    """IQL's options (used when ``name: iql``)."""
    awr: AWRConfig = Field(default_factory=AWRConfig)
    """AWR's options (used when ``name: awr``)."""
    filtered_bc: FilteredBCConfig = Field(default_factory=FilteredBCConfig)
    """Return-filtered BC's options (used when ``name: filtered_bc``)."""
    cpl: CPLConfig = Field(default_factory=CPLConfig)
    """CPL's options (used when ``name: cpl``)."""

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, dict):
            name = data.get("name", "iql")
            if name not in LEARNERS:
                raise ValueError(
                    f"field 'name': unknown learner {name!r}; valid: {', '.join(LEARNERS)}"
                )
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; valid: {', '.join(cls.model_fields)}")
        return data

    def options(self) -> LearnerConfig:
        """The options of the selected learner."""
        return getattr(self, self.name)


def make_learner(
    config: PolicyConfig, obs_dim: int, act_dim: int, **updates: Any
) -> OfflineLearner:
    """Build the learner ``config.name`` with its options, ``updates`` applied on top
    (e.g. ``seed``, ``device``, ``log_dir``, ``checkpoint_dir``)."""
    options = config.options().model_copy(update=updates)
    return LEARNERS[config.name](obs_dim, act_dim, options)


__all__ = [
    "AWR",
    "AWRConfig",
    "CPL",
    "CPLConfig",
    "FilteredBC",
    "FilteredBCConfig",
    "IQL",
    "IQLConfig",
    "LEARNERS",
    "LearnerConfig",
    "NonFiniteLossError",
    "OfflineLearner",
    "PolicyConfig",
    "TransitionBuffer",
    "awr_weights",
    "cpl_loss",
    "cpl_scores",
    "expectile_loss",
    "make_learner",
    "select_episodes",
]
