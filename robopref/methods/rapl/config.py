"""The typed config of the ``rapl`` recipe. Every rule between fields is checked when the config
is read, before any data is collected."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from robopref.config import Device, Seed, StrictModel
from robopref.envs import CollectConfig
from robopref.envs.render import RenderConfig
from robopref.policies.online.rlpd import RLPDConfig
from robopref.rewards import RewardTrainerConfig
from robopref.rewards.visual import AlignConfig
from robopref.teachers import TeacherConfig


class EncoderConfig(StrictModel):
    """The visual encoder every OT reward embeds frames with."""

    backbone: Literal["cnn", "resnet18"] = "cnn"
    """``cnn``: a small convolutional net; ``resnet18``: torchvision's ResNet-18."""
    out_dim: int = Field(32, ge=1)
    """Size of a frame embedding."""
    weights_path: str | None = None
    """Local ResNet-18 ``state_dict`` to start from (nothing is downloaded)."""
    freeze_backbone: bool = False
    """Train only the projection head."""
    cnn_width: int = Field(16, ge=1)
    """Channels of the first ``cnn`` layer."""


class RLHFConfig(StrictModel):
    """The RLHF baselines: an MLP reward fitted (Bradley-Terry) on the same triplets."""

    inputs: list[Literal["state", "embedding"]] = Field(
        default_factory=lambda: ["state", "embedding"]
    )
    """What the MLP reads: the 39-d states, the unaligned encoder's frame embeddings, or both
    (one baseline each)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the MLP."""
    trainer: RewardTrainerConfig = Field(
        default_factory=lambda: RewardTrainerConfig(epochs=200, lr=1e-3, batch_size=32, quiet=True)
    )
    """Reward training; its ``seed`` and ``device`` come from the recipe's."""


class RLConfig(StrictModel):
    """The optional RL stage: SAC on state observations with each reward of ``rewards``."""

    enabled: bool = False
    """Run the RL stage."""
    algo: Literal["sac", "rlpd"] = "sac"
    """``sac``: SB3's SAC (demos only with ``demos_in_buffer``); ``rlpd``: SAC with the scene
    demos used the RLPD way (half of every batch from a separate demo buffer, LayerNorm critics,
    ``rlpd.utd`` gradient steps per transition, ``rlpd.num_envs`` vector envs)."""
    rlpd: RLPDConfig = Field(default_factory=RLPDConfig)
    """RLPD options (with ``algo: rlpd``)."""
    rewards: list[Literal["rapl", "unaligned", "rlhf_state", "gt"]] = Field(
        default_factory=lambda: ["rapl", "unaligned", "rlhf_state", "gt"]
    )
    """Rewards SAC is trained on; learned ones use the labels of ``budget`` triplets."""
    budget: int | None = None
    """Label budget of the learned rewards; default: the largest of ``budgets``."""
    fixed_configuration: bool = True
    """One scene for training and evaluation: ``collect.scene_seed`` when the data was collected
    in one scene, else ``reset(seed=configuration_seed + seed)``; ``num_demos`` scripted demos of
    that scene are the OT reward's demos. False: a new configuration every episode, the data's
    expert episodes as demos."""
    configuration_seed: Seed = 10_000
    """Base of the scene's reset seed when the data has no scene of its own."""
    demo_noise: float = Field(0.1, ge=0)
    """Action noise of the scene's demos after the first."""
    demos_in_buffer: bool = False
    """SACfD-style: the scene demos' transitions, rewarded by the reward SAC is trained on, are
    put in the replay buffer before training (only with ``fixed_configuration``)."""
    reward_range: tuple[float, float] = (0.0, 10.0)
    """Learned rewards are mapped affinely so that the 5% / 95% quantiles of their per-frame
    values on the train videos become these (Meta-World's GT reward lies in [0, 10] per step)."""
    mode: Literal["episode", "prefix"] = "episode"
    """``episode``: OT rewards of a finished episode replace its rewards in the buffer;
    ``prefix``: each step is paid the OT reward of the episode so far."""
    total_steps: int = Field(20000, ge=1)
    """Environment steps of SAC training."""
    learning_starts: int = Field(1000, ge=0)
    """Steps before the first gradient step."""
    eval_episodes: int = Field(10, ge=1)
    """Without ``fixed_configuration``: episodes of new scenes; with it: the deterministic policy
    gets 1 episode of the scene, the sampled one ``eval_episodes`` (``sampled_success_rate``)."""
    max_episode_steps: int | None = None
    """Episode length of the RL env; default: the data's episode length."""

    @model_validator(mode="after")
    def _rlpd_needs_scene_demos(self) -> RLConfig:
        if self.algo == "rlpd" and not self.fixed_configuration:
            raise ValueError(
                "rl.algo: 'rlpd' needs rl.fixed_configuration: true (its demos are the scene's), "
                "found fixed_configuration: false"
            )
        return self


class Config(StrictModel):
    """RAPL: preference-aligned visual encoders and OT visual rewards, against RLHF baselines."""

    method: str = "rapl"
    """The recipe (``rapl``)."""
    task: str
    """The Meta-World task (e.g. ``button-press-v3``)."""
    collect: CollectConfig | None = None
    """What to collect; default: ``CollectConfig(tasks=[task])``."""
    dataset: str | None = None
    """An HDF5 dataset to read instead of collecting (rendered when it has no images)."""
    render: RenderConfig = Field(default_factory=lambda: RenderConfig(frame_stride=5))
    """Camera, image size and frame stride of the videos."""
    num_demos: int = Field(5, ge=1)
    """Expert episodes used as alignment anchors and as the OT reward's demos."""
    test_fraction: float = Field(0.3, gt=0, lt=1)
    """Share of the non-demo videos held out for evaluation."""
    budgets: list[PositiveInt] = Field(default_factory=lambda: [50, 150, 300], min_length=1)
    """Label budgets: numbers of ranked triplets each learned reward is fitted on."""
    query_k: int = Field(3, ge=2)
    """Videos per training query (3: triplets)."""
    eval_queries: int = Field(300, ge=1)
    """Held-out video pairs labelled by the oracle for the accuracy."""
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig(name="oracle"))
    """The simulated teacher of the training queries: a preset name (``oracle``, ``mistake``,
    ...) or a full teacher config."""
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    """The visual encoder (aligned by RAPL; as initialised for ``unaligned``)."""
    align: AlignConfig = Field(default_factory=AlignConfig)
    """Alignment training; its ``seed`` and ``device`` come from the recipe's."""
    ot_eps: float = Field(0.05, gt=0)
    """Sinkhorn entropy of the OT rewards (cost units)."""
    rlhf: RLHFConfig = Field(default_factory=RLHFConfig)
    """The RLHF baselines."""
    rl: RLConfig = Field(default_factory=RLConfig)
    """The optional RL stage."""
    seed: Seed = 0
    """Seed of the split, the labels, the encoder's initial weights and every training."""
    device: Device = "auto"
    """``auto``: CUDA when present."""
    num_threads: int | None = None
    """Torch threads (and Numba's) of this process; default: the library's choice."""

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.rl.budget is not None and self.rl.budget not in self.budgets:
            raise ValueError(
                f"rl.budget: expected one of budgets {self.budgets}, found {self.rl.budget}"
            )
        if self.collect is not None and self.collect.tasks != [self.task]:
            raise ValueError(
                f"collect.tasks: expected [{self.task!r}] (the recipe's task), "
                f"found {self.collect.tasks}"
            )
        if self.dataset is None and self.num_demos > self.collect_config.expert_episodes:
            raise ValueError(
                f"num_demos: expected <= collect.expert_episodes "
                f"({self.collect_config.expert_episodes}), found {self.num_demos}"
            )
        if self.align.anchor == "preferred" and self.query_k < 3:
            raise ValueError(
                f"query_k: align.anchor 'preferred' needs queries of >= 3 videos, "
                f"found {self.query_k}"
            )
        if self.rl.enabled and "rlhf_state" in self.rl.rewards and "state" not in self.rlhf.inputs:
            raise ValueError(
                f"rl.rewards: 'rlhf_state' needs 'state' in rlhf.inputs, "
                f"found rlhf.inputs {self.rlhf.inputs}"
            )
        return self

    @property
    def collect_config(self) -> CollectConfig:
        """What is collected (``collect`` or its default)."""
        return self.collect or CollectConfig(tasks=[self.task])

    @property
    def rl_budget(self) -> int:
        """Label budget of the learned rewards SAC is trained on."""
        return self.rl.budget or max(self.budgets)

    @property
    def rl_scene(self) -> int:
        """Reset seed of the RL scene: the data's scene when it was collected in one."""
        if self.collect is not None and self.collect.scene_seed is not None:
            return self.collect.scene_seed
        return self.rl.configuration_seed + self.seed
