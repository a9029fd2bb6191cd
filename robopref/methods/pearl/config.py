"""The typed config of the ``pearl`` recipe and its variants."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from robopref.config import Device, Distinct, Seed, StrictModel
from robopref.envs import CollectConfig
from robopref.policies.offline import PolicyConfig
from robopref.rewards import RewardTrainerConfig
from robopref.teachers import TeacherConfig
from robopref.transfer import TransferConfig


class RewardPolicyConfig(PolicyConfig):
    """A :class:`PolicyConfig` whose learner reads rewards: every PEARL variant hands the
    learner relabelled transitions, never the labelled segments that CPL's loss reads (the
    ``sim`` and ``oracle`` variants have no target segments at all)."""

    @field_validator("name")
    @classmethod
    def _learns_from_rewards(cls, name: str) -> str:
        if name == "cpl":
            raise ValueError(
                "expected iql, awr or filtered_bc (the recipe trains its policy on relabelled "
                "rewards; CPL learns from labelled segments: robopref train-policy DATA "
                "policy.name=cpl)"
            )
        return name


Variant = Literal["pearl", "pearl_bt", "gw_plain", "sim", "dis", "oracle", "shuffled"]
VARIANTS: dict[str, tuple[str, bool]] = {  # variant -> (label source, robust reward)
    "pearl": ("transfer", True),  # "transfer": the configured transfer.method
    "pearl_bt": ("transfer", False),
    "gw_plain": ("gw", False),
    "sim": ("sim", False),
    "dis": ("dis", False),
    "oracle": ("oracle", False),
    "shuffled": ("shuffled", False),
}


class QueryConfig(StrictModel):
    """How many segment pairs are drawn, labelled and transferred."""

    segment_length: int = Field(25, ge=1)
    """Steps per segment."""
    source_pool: int = Field(300, ge=2)
    """Distinct source segments the labelled pairs are drawn among."""
    source_queries: int = Field(2000, ge=1)
    """Labelled source pairs among them."""
    target_pool: int = Field(300, ge=2)
    """Distinct target segments the transferred pairs are drawn among."""
    target_queries: int = Field(1000, ge=1)
    """Target pairs that receive transferred labels."""
    eval_queries: int = Field(500, ge=1)
    """Held-out oracle-labelled target pairs (reward accuracy)."""
    min_confidence: float = Field(0.0, ge=0, le=1)
    """Drop transferred labels whose confidence is below this."""


class RewardConfig(StrictModel):
    """The reward model fitted to each variant's target labels."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the reward MLP."""
    prior_std: float = 0.1
    """Robust (RRL) variants: target of the variance regulariser."""
    reg_weight: float = 1.0
    """Robust variants: weight of the variance regulariser."""
    trainer: RewardTrainerConfig = Field(default_factory=RewardTrainerConfig)
    """Optimiser, loss and epochs of the reward trainer."""


class Config(StrictModel):
    """PEARL: transfer preference labels from a source task to a target task, learn a reward
    and an offline policy per variant, and evaluate them on the same episodes."""

    method: str = "pearl"
    source: CollectConfig
    """Scripted Meta-World data of the labelled source task."""
    target: CollectConfig
    """Scripted Meta-World data of the unlabelled target task."""
    source_dataset: str | None = None
    """Load the source data from this HDF5 file (robopref/robomimic layout) instead of
    collecting it; a file replaced under the same path makes everything after it again."""
    target_dataset: str | None = None
    """Load the target data from this HDF5 file instead of collecting it."""
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    """The simulated labeller of the source pairs (and the oracle/shuffled target labels)."""
    queries: QueryConfig = Field(default_factory=QueryConfig)
    """Pair counts and segment length."""
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    """How labels move across tasks (``auto``: fused GW, its setting chosen without target
    labels)."""
    reward: RewardConfig = Field(default_factory=RewardConfig)
    """The reward model and its trainer."""
    policy: RewardPolicyConfig = Field(default_factory=RewardPolicyConfig)
    """The offline learner trained on the relabelled target data (``name``: iql, awr or
    filtered_bc; not cpl, which learns from labelled segments rather than rewards)."""
    variants: Distinct[Variant] = ["pearl", "pearl_bt", "gw_plain", "sim", "oracle"]
    """Compared variants, in table order (see the recipe's docstring)."""
    eval_episodes: int = Field(50, ge=1)
    """Evaluation episodes per variant (the same reset seeds for every variant)."""
    shuffled_permutations: int = Field(1, ge=1)
    """Independent permutations of the shuffled control per run: a reward fitted to permuted
    labels ranks the directed episodes on top or at the bottom almost at random, so one draw
    per seed makes the control's mean very noisy (docs/decisions.md, 'PEARL suite')."""
    eval_max_steps: int | None = Field(None, ge=1)
    """Steps per evaluation episode; None: the target's ``max_episode_steps``."""
    seed: Seed = 0
    """Seeds pair sampling, the networks and the shuffled control."""
    device: Device = "auto"
    """Torch device of the reward and the policy (``auto``: CUDA when present)."""
    num_threads: int | None = None
    """Torch CPU threads (None: torch's default)."""
    eval_seed: Seed | None = None
    """Reset seed of the first evaluation episode; None: 10_000 + seed."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_iql_key(cls, data):
        """Older configs say ``iql: {...}``: a shorthand for ``policy.iql`` (its keys win)."""
        if isinstance(data, dict) and isinstance(data.get("iql"), dict):
            data = dict(data)
            policy = dict(data.get("policy") or {})
            policy["iql"] = {**(policy.get("iql") or {}), **data.pop("iql")}
            data["policy"] = policy
        return data
