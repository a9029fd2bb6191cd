"""Reward models on camera frames: r(frame, action) from a small CNN.

:class:`ImageReward` reads frames ``[..., H, W, 3]`` (uint8 RGB, or float in [0, 255]; the
normalisation happens inside the model, so data stay uint8 until a batch reaches it), embeds
each with the small CNN of :class:`~robopref.rewards.visual.VisualEncoder` and maps
``[embedding, action]`` through an MLP to one reward per step, like :class:`MLPReward` does
with a state vector. While training, each frame is shifted at random by up to ``shift`` pixels
(edges replicated; DrQ's augmentation), which keeps a CNN from memorising a few hundred
segments. :class:`ImageEnsembleReward` is M of them, with the ensemble's disagreement (active
query selection) and per-member losses of :class:`EnsembleReward`.

Both are registered reward models: :func:`save_reward` / :func:`load_reward` rebuild them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

import robopref.losses as losses
from robopref.rewards.models import (
    OUTPUTS,
    EnsembleReward,
    RewardModel,
    mlp,
    register_reward_model,
)
from robopref.rewards.visual import VisualEncoder


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(x) for x in image_shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < 16:
        raise ValueError(f"image_shape: expected (H, W, 3) with H, W >= 16, found {shape}")
    return shape  # type: ignore[return-value]


def random_shift(
    frames: torch.Tensor, pad: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``frames [N, H, W, C]`` (float) padded by ``pad`` pixels (edges replicated) and cropped
    back to ``H x W`` at an offset drawn per frame."""
    if pad <= 0 or len(frames) == 0:
        return frames
    N, H, W, _ = frames.shape
    x = nn.functional.pad(frames.permute(0, 3, 1, 2), (pad, pad, pad, pad), mode="replicate")
    where = generator.device if generator is not None else frames.device
    off = torch.randint(0, 2 * pad + 1, (2, N), generator=generator, device=where)
    off = off.to(frames.device)
    rows = off[0][:, None] + torch.arange(H, device=frames.device)  # [N, H]
    cols = off[1][:, None] + torch.arange(W, device=frames.device)  # [N, W]
    n = torch.arange(N, device=frames.device)[:, None, None]
    return x[n, :, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]


@register_reward_model
class ImageReward(RewardModel):
    """r(frame, a) = out(MLP([CNN(frame), a])) with ``output="tanh"`` (rewards in [-1, 1]) or
    ``None``.

    Args:
        image_shape: per-step frame shape ``(H, W, 3)``.
        act_dim: action size (0: a reward of the frame only).
        cnn_width: channels of the CNN's first convolution (the later two have twice as many).
        embed_dim: size of the frame embedding.
        hidden: hidden widths of the MLP on ``[embedding, action]``.
        activation, output: as in :class:`MLPReward`.
        shift: random-shift augmentation in pixels while training (0: none).
    """

    max_batch_steps = 2048

    def __init__(
        self,
        image_shape: Sequence[int] = (64, 64, 3),
        act_dim: int = 0,
        cnn_width: int = 16,
        embed_dim: int = 64,
        hidden: Sequence[int] = (256,),
        activation: str = "leaky_relu",
        output: str | None = "tanh",
        shift: int = 4,
    ) -> None:
        shape = _check_image_shape(image_shape)
        if output not in OUTPUTS:
            raise ValueError(f"output: expected 'tanh' or None, found {output!r}")
        if shift < 0:
            raise ValueError(f"shift: expected >= 0 pixels, found {shift}")
        super().__init__(int(np.prod(shape)), act_dim)
        self.init_kwargs = {
            "image_shape": list(shape),
            "act_dim": self.act_dim,
            "cnn_width": int(cnn_width),
            "embed_dim": int(embed_dim),
            "hidden": [int(h) for h in hidden],
            "activation": activation,
            "output": output,
            "shift": int(shift),
        }
        self.image_shape = shape
        self.encoder = VisualEncoder("cnn", out_dim=int(embed_dim), cnn_width=int(cnn_width))
        self.head = mlp(int(embed_dim) + self.act_dim, hidden, 1, activation)
        self.output = output
        self.shift = int(shift)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs)  # uint8 stays uint8 until the encoder

    def _check(self, obs: torch.Tensor, act: torch.Tensor | None) -> None:
        if tuple(obs.shape[-3:]) != self.image_shape:
            raise ValueError(
                f"obs: expected frames [..., {', '.join(map(str, self.image_shape))}], "
                f"found {tuple(obs.shape)}"
            )
        if self.act_dim and (act is None or tuple(act.shape) != (*obs.shape[:-3], self.act_dim)):
            found = None if act is None else tuple(act.shape)
            raise ValueError(
                f"act: expected shape {(*obs.shape[:-3], self.act_dim)} (obs's leading dims), "
                f"found {found}"
            )

    def rewards(
        self,
        obs: torch.Tensor,
        act: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        augment: bool = False,
    ) -> torch.Tensor:
        """Reward ``[...]`` of frames ``[..., H, W, 3]``; ``augment`` shifts them first."""
        self._check(obs, act)
        lead = obs.shape[:-3]
        frames = obs.reshape(-1, *self.image_shape).float()
        if augment:
            frames = random_shift(frames, self.shift, generator)
        emb = self.encoder(frames).reshape(*lead, -1)
        if self.act_dim:
            emb = torch.cat([emb, act.to(emb.dtype)], dim=-1)
        r = self.head(emb).squeeze(-1)
        return torch.tanh(r) if self.output == "tanh" else r

    def forward(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        return self.rewards(obs, act)

    def training_terms(self, obs, act, step_mask, num_samples=1, generator=None):
        r = self.rewards(obs, act, generator, augment=self.shift > 0)
        return losses.segment_return_scores(r, step_mask).unsqueeze(0), r.new_zeros(())


@register_reward_model
class ImageEnsembleReward(EnsembleReward):
    """M independently initialised :class:`ImageReward` members; the reward is their mean.

    Each member has its own CNN (no shared encoder), its own preference loss and its own
    augmentation draws; ``disagreement`` works as for :class:`EnsembleReward`.
    """

    max_batch_steps = 1024

    def __init__(
        self,
        image_shape: Sequence[int] = (64, 64, 3),
        act_dim: int = 0,
        n_members: int = 3,
        cnn_width: int = 16,
        embed_dim: int = 64,
        hidden: Sequence[int] = (256,),
        activation: str = "leaky_relu",
        output: str | None = "tanh",
        shift: int = 4,
    ) -> None:
        if n_members < 1:
            raise ValueError(f"n_members: expected >= 1, found {n_members}")
        shape = _check_image_shape(image_shape)
        RewardModel.__init__(self, int(np.prod(shape)), act_dim)
        member = dict(
            image_shape=list(shape), act_dim=self.act_dim, cnn_width=int(cnn_width),
            embed_dim=int(embed_dim), hidden=[int(h) for h in hidden], activation=activation,
            output=output, shift=int(shift),
        )  # fmt: skip
        self.init_kwargs = {**member, "n_members": int(n_members)}
        self.image_shape = shape
        self.members = nn.ModuleList(ImageReward(**member) for _ in range(n_members))

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs)

    def training_terms(self, obs, act, step_mask, num_samples=1, generator=None):
        r = torch.stack([m.rewards(obs, act, generator, augment=m.shift > 0) for m in self.members])
        M, B, K, H = r.shape
        m = None if step_mask is None else step_mask.expand(M, B, K, H).reshape(M * B, K, H)
        scores = losses.segment_return_scores(r.reshape(M * B, K, H), m).reshape(M, B, K)
        return scores, r.new_zeros(())
