"""The typed config of the ``grape_offline`` recipe: the dataset and its preferences, the policy
(a tiny random LM or a local image-text-to-text model), SFT, LoRA and the alignment step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from robopref.config import Device, InputPath, Seed, StrictModel
from robopref.methods.grape.config import LoraConfig


class OfflineModel(StrictModel):
    """The policy: a tiny random LM behind a new observation encoder, or a local
    image-text-to-text model (SmolVLM / Idefics3, LLaVA) seeing the camera frames."""

    path: str | None = None
    """Local image-text-to-text model folder; None builds a tiny random LM."""
    dtype: str = "auto"
    """torch dtype of a local model ("auto", "float32", "bfloat16")."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass of a local model (less memory)."""
    image_key: str = "images.cam"
    """Observation key of the camera frames."""
    state_key: str | None = "state"
    """Observation key of the proprioceptive state (tiny LM with obs_mode image+state)."""
    obs_mode: Literal["image", "image+state", "state"] = "image"
    """What the tiny LM sees (a local model sees the frames)."""
    hidden_size: int = 64
    """Hidden size of the tiny LM."""
    n_layers: int = 2
    """Layers of the tiny LM."""


class OfflineLabels(StrictModel):
    """Where the preferences come from and how many are held out."""

    source: Literal["dataset", "teacher"] = "dataset"
    """dataset: the queries stored with the dataset; teacher: label new ones here."""
    teacher: str = "oracle"
    """Simulated teacher preset (source: teacher), on the dataset's rewards."""
    num_queries: int = Field(200, ge=2)
    """Queries the teacher labels."""
    segment_length: int = Field(3, ge=1)
    """Steps per segment of the teacher's queries."""
    held_out: float = Field(0.25, gt=0, lt=1)
    """Fraction of the queries held out for the accuracy."""


class OfflineSFT(StrictModel):
    """Behaviour cloning on every episode."""

    epochs: int = Field(30, ge=0)
    """Epochs over the steps."""
    batch_size: int = Field(64, ge=1)
    """Steps per batch."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate (LoRA on a local model: try 1e-4)."""


class OfflineLearner(StrictModel):
    """The alignment step on the training queries."""

    name: Literal["tpo", "step_dpo", "rejection_sampling"] = "tpo"
    """tpo, step_dpo, or rejection_sampling (BC of the preferred segments)."""
    loss: str = "dpo"
    """A loss of robopref.losses (tpo)."""
    beta: float = Field(0.1, gt=0)
    """DPO's beta; also scales the implicit reward."""
    normalize: bool = False
    """Score = beta * the mean per-token log-ratio instead of the sum (tpo)."""
    sft_weight: float = Field(0.0, ge=0)
    """Adds sft_weight * the preferred segments' NLL per token (tpo)."""
    epochs: int = Field(10, ge=1)
    """Epochs over the training queries."""
    batch_size: int = Field(8, ge=1)
    """Queries per batch."""
    lr: float = Field(5e-4, gt=0)
    """AdamW learning rate."""


class GrapeOfflineConfig(StrictModel):
    """SFT then preference alignment of a tokenised-action policy on a labelled dataset."""

    method: Literal["grape_offline"] = "grape_offline"
    dataset: InputPath
    """robopref HDF5 file, or a LeRobot / robomimic folder (imported into the run folder)."""
    labels: OfflineLabels = Field(default_factory=OfflineLabels)
    """The preferences."""
    model: OfflineModel = Field(default_factory=OfflineModel)
    """The policy."""
    sft: OfflineSFT = Field(default_factory=OfflineSFT)
    """Supervised fine-tuning."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA adapters of the alignment step (and of SFT on a local model)."""
    learner: OfflineLearner = Field(default_factory=OfflineLearner)
    """The alignment step."""
    seed: Seed = 0
    """Seed of the split, the teacher, SFT and the alignment."""
    device: Device = "auto"
    """torch device ("auto": CUDA when present)."""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    tensorboard: bool = True
    """Log to TensorBoard under <out_dir>/tb."""
    progress: bool = True
    """Show progress bars."""
    resume: bool = True
    """Reuse the checkpoints in the run folder that this config made."""

    @model_validator(mode="after")
    def _check(self) -> GrapeOfflineConfig:
        from robopref.losses import get_loss

        get_loss(self.learner.loss)
        if self.model.path is not None and self.model.obs_mode != "image":
            raise ValueError("model.obs_mode: a local vision-language model sees 'image' only")
        return self


Config = GrapeOfflineConfig
"""Recipe ``grape_offline``: the config class."""
