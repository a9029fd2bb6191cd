"""Typed configs of the own-data steps: ``train-reward``, ``relabel`` and ``train-policy``.

Each command fills ``data`` (and ``reward`` / ``out``) from its arguments; the rest comes from
the shipped config (``robopref/configs/own_data/*.yaml``) and ``key=value`` overrides. The whole config
is validated before any work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from robopref.config import StrictModel
from robopref.policies.offline import PolicyConfig
from robopref.rewards import RewardTrainerConfig


class ImageRewardConfig(StrictModel):
    """The frame encoder of the image reward (used when ``obs_key`` names RGB frames
    ``[T, H, W, 3]``; frames are read at their stored size)."""

    cnn_width: int = Field(16, ge=1)
    """Channels of the small CNN's first convolution (the two later ones have twice as many);
    compute grows with its square and with the frames' pixels."""
    embed_dim: int = Field(64, ge=1)
    """Size of the frame embedding the reward's MLP reads (with the action)."""
    shift: int = Field(4, ge=0)
    """Random-shift augmentation while training: each frame padded by this many pixels (edges
    replicated) and cropped back at a random offset; 0 turns it off."""


class RewardModelConfig(StrictModel):
    """Which reward model ``train-reward`` fits."""

    kind: Literal["mlp", "ensemble", "gaussian"] = "mlp"
    """``mlp`` (Bradley-Terry MLP), ``ensemble`` (several MLPs, their mean) or ``gaussian``
    (the robust reward: a mean and a variance per step, PEARL's RRL; state keys only). On an
    image key, ``mlp`` is one CNN reward and ``ensemble`` several."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths (on an image key: of the MLP after the frame embedding)."""
    image: ImageRewardConfig = Field(default_factory=ImageRewardConfig)
    """The CNN of the image reward (ignored on a state key)."""
    members: int = Field(3, ge=1)
    """Ensemble members (``kind: ensemble``)."""
    prior_std: float = Field(0.1, gt=0)
    """Gaussian reward: target standard deviation of its variance regulariser."""
    reg_weight: float = Field(1.0, ge=0)
    """Gaussian reward: weight of the variance regulariser."""
    use_actions: bool = True
    """Reward of (observation, action); False: of the observation only."""


class TrainRewardConfig(StrictModel):
    """``robopref train-reward DATA``: fit a reward model to the file's preference labels."""

    method: str = "train-reward"
    data: str
    """The robopref HDF5 file with labelled preference queries (``robopref label`` or
    ``label-ui``)."""
    obs_key: str = "state"
    """Observation key the reward reads: a vector per step (``state`` for array observations)
    or RGB frames ``[T, H, W, 3]`` (an image key: the reward is a small CNN on the frames)."""
    model: RewardModelConfig = Field(default_factory=RewardModelConfig)
    trainer: RewardTrainerConfig = Field(
        default_factory=lambda: RewardTrainerConfig(epochs=50, batch_size=64)
    )
    """Loss of the core (``bt``, ``plackett_luce``, ``lipo_lambda``, ...), optimiser, epochs."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of the labelled queries held out to measure preference accuracy."""
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    """Torch CPU threads (None: torch's default)."""


class RelabelConfig(StrictModel):
    """``robopref relabel DATA --reward CKPT --out NEW``: learned per-step rewards into a file."""

    method: str = "relabel"
    data: str
    """The robopref HDF5 file to relabel (never written unless ``in_place``)."""
    reward: str
    """A reward checkpoint written by ``train-reward``."""
    out: str | None = None
    """The new file (required unless ``in_place``)."""
    in_place: bool = False
    """Write the relabelled data over ``data`` itself."""
    batch_size: int = Field(65536, ge=1)
    """Steps per forward pass of the reward model."""

    @model_validator(mode="after")
    def _one_target(self) -> RelabelConfig:
        if self.in_place and self.out is not None:
            raise ValueError("give either --out NEW or --in-place, not both")
        if not self.in_place and self.out is None:
            raise ValueError("--out NEW is required (or --in-place to write over DATA)")
        return self


class TrainPolicyConfig(StrictModel):
    """``robopref train-policy DATA``: an offline policy from the file's rewards (``iql``,
    ``awr``, ``filtered_bc``) or straight from its preference labels (``cpl``)."""

    method: str = "train-policy"
    data: str
    """The robopref HDF5 file (relabelled by ``robopref relabel``, or with recorded rewards)."""
    obs_key: str = "state"
    """Observation key the policy reads: a vector per step (offline policies are state-only;
    an image key is refused)."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    holdout: float = Field(0.1, ge=0, lt=1)
    """Share of the episodes held out for the action error and the implicit reward's
    preference accuracy (0: measure them on the training data)."""
    evaluate: Literal["auto", "sim", "offline"] = "auto"
    """``sim``: success in simulation (a known Meta-World task); ``offline``: held-out metrics
    only; ``auto``: simulation when the data's task is a known simulated task."""
    eval_episodes: int = Field(50, ge=1)
    """Simulation episodes (reset seeds ``eval_seed, eval_seed + 1, ...``)."""
    eval_seed: int = 10_000
    eval_max_steps: int | None = Field(None, ge=1)
    """Episode length in simulation (None: the data's longest episode)."""
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    """Torch CPU threads (None: torch's default)."""
