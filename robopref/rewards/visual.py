"""Visual encoders for frame embeddings and their preference alignment (RAPL).

Encoders map frames ``[..., H, W, 3]`` (uint8 RGB, or float in [0, 255]) to embeddings
``[..., d]`` (``d = 32`` by default, RAPL's projection size):

* ``"cnn"``: a small CNN trained from scratch (3 strided convolutions, global average pooling,
  linear projection).
* ``"resnet18"``: torchvision's ResNet-18 (ImageNet normalisation) + a linear projection head.
  Weights are read from a local ``weights_path`` (a ``state_dict`` file, e.g. torchvision's
  ``resnet18-f37072fd.pth``) when given; nothing is downloaded. torchvision is an optional
  dependency imported only here.

Preference alignment (:func:`align_encoder`, RAPL section 4): for a query of K videos ranked by
a teacher, the score of video k is ``s_k = -OT(anchor, video_k) / temperature`` where ``OT`` is
the entropic OT cost (cosine cost between frame embeddings, differentiable Sinkhorn of
:mod:`robopref.ot`) and the anchor is an expert demonstration (the preferred end of the
ranking). The scores go to a loss of :mod:`robopref.losses` (``bt``: Bradley-Terry over the
preferred pairs of each list; ``plackett_luce``, ...); tied pairs add
``tie_weight * (0.5 - sigmoid(s_i - s_j))^2`` (RAPL's tie term).
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from robopref import losses
from robopref.config import Device, Seed, StrictModel
from robopref.rewards.ot_reward import cosine_cost, ot_distance
from robopref.utils import atomic_path, resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SmallCNN(nn.Module):
    """Frames ``[N, 3, H, W]`` (normalised) -> features ``[N, width * 2]``; any H, W >= 16."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width * 2, width * 2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = width * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _resnet18(weights_path: str | None) -> tuple[nn.Module, int]:
    try:
        import torchvision
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "encoder 'resnet18' needs torchvision, which is not installed; install it "
            "(pip install torchvision) or use encoder='cnn'"
        ) from exc
    net = torchvision.models.resnet18(weights=None)
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    features = net.fc.in_features
    net.fc = nn.Identity()
    return net, features


class VisualEncoder(nn.Module):
    """Backbone + linear projection to ``out_dim``: ``frames [..., H, W, 3] -> [..., out_dim]``.

    Args:
        backbone: ``"cnn"`` (from scratch) or ``"resnet18"`` (torchvision; ``weights_path``).
        out_dim: embedding size d.
        weights_path: local ResNet-18 ``state_dict`` file (``None``: random initialisation).
        freeze_backbone: train only the projection head during alignment.
        cnn_width: channels of the first convolution of the small CNN.
    """

    def __init__(
        self,
        backbone: str = "cnn",
        out_dim: int = 32,
        weights_path: str | None = None,
        freeze_backbone: bool = False,
        cnn_width: int = 32,
    ) -> None:
        super().__init__()
        self.init_kwargs = {
            "backbone": backbone,
            "out_dim": out_dim,
            "freeze_backbone": freeze_backbone,
            "cnn_width": cnn_width,
        }
        if backbone == "cnn":
            if weights_path is not None:
                raise ValueError("weights_path: only for backbone='resnet18', found a path")
            self.backbone: nn.Module = SmallCNN(cnn_width)
            features = self.backbone.out_features
            mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        elif backbone == "resnet18":
            self.backbone, features = _resnet18(weights_path)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            raise ValueError(f"backbone: expected 'cnn' or 'resnet18', found {backbone!r}")
        self.head = nn.Linear(features, out_dim)
        self.out_dim = out_dim
        self.backbone_name = backbone
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[..., out_dim]`` of ``frames [..., H, W, 3]`` (uint8 or float 0-255)."""
        if frames.ndim < 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected shape [..., H, W, 3], found {tuple(frames.shape)}")
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        return self.head(self.backbone(x)).reshape(*lead, self.out_dim)

    def save(self, path: str | Path) -> None:
        """Write the encoder (constructor arguments and weights) to ``path`` atomically."""
        with atomic_path(path) as tmp:
            torch.save({"init_kwargs": self.init_kwargs, "state_dict": self.state_dict()}, tmp)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> VisualEncoder:
        """An encoder written by :meth:`save` (no ResNet weights file is needed)."""
        try:
            blob = torch.load(path, map_location=device, weights_only=True)
            kwargs, state = blob["init_kwargs"], blob["state_dict"]
        except (OSError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
            raise ValueError(
                f"{path}: expected a VisualEncoder checkpoint with fields 'init_kwargs' and "
                f"'state_dict' ({type(e).__name__}: {e})"
            ) from e
        encoder = cls(**kwargs)
        encoder.load_state_dict(state)
        return encoder.to(device)

    @torch.no_grad()
    def embed(self, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """numpy ``frames [..., H, W, 3]`` -> float32 numpy ``[..., out_dim]`` (eval mode)."""
        frames = np.asarray(frames)
        if frames.ndim < 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected shape [..., H, W, 3], found {frames.shape}")
        was_training = self.training
        self.eval()
        flat = frames.reshape(-1, *frames.shape[-3:])
        out = [
            self(torch.as_tensor(flat[i : i + batch_size], device=self.device)).cpu()
            for i in range(0, len(flat), batch_size)
        ]
        self.train(was_training)
        emb = torch.cat(out) if out else torch.zeros(0, self.out_dim)
        return emb.numpy().reshape(*frames.shape[:-3], self.out_dim)


class AlignConfig(StrictModel):
    """Settings of :func:`align_encoder`."""

    loss: str = "bt"
    """Loss-core name applied to the ``[B, K]`` OT scores (``bt``, ``plackett_luce``, ...)."""
    anchor: Literal["demo", "preferred"] = "demo"
    """``demo``: each query is scored against an expert demo drawn from ``anchors``;
    ``preferred``: the paper's choice, the query's top-ranked video is the anchor and the other
    ``K - 1`` videos are ranked by their OT cost to it (needs ``K >= 3``)."""
    temperature: float = Field(0.05, gt=0)
    """Scores are ``-OT / temperature`` (OT costs lie in [0, 2])."""
    tie_weight: float = Field(1.0, ge=0)
    """Weight of the ``(0.5 - p)^2`` term on tied pairs (0 disables)."""
    eps: float = Field(0.05, gt=0)
    """Sinkhorn entropy (cost units)."""
    sinkhorn_iters: int = Field(50, ge=1)
    """Unrolled Sinkhorn iterations."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    epochs: int = Field(20, ge=0)
    """Passes over the training queries."""
    batch_size: int = Field(16, ge=1)
    """Queries per minibatch."""
    seed: Seed = 0
    """Seeds the initialisation, the anchors drawn and the minibatch order."""
    device: Device = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda:0``, ..."""


def _check_queries(items: np.ndarray, labels: np.ndarray, num_videos: int, name: str) -> None:
    if items.ndim != 2 or items.shape[1] < 2 or labels.shape != items.shape:
        raise ValueError(
            f"{name}: expected items and labels of the same shape [Q, K] with K >= 2, found "
            f"{items.shape} and {labels.shape}"
        )
    if len(items) and (items.min() < 0 or items.max() >= num_videos):
        raise ValueError(
            f"{name}: expected video indices in [0, {num_videos}), found "
            f"[{items.min()}, {items.max()}]"
        )


def tie_penalty(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of ``(0.5 - sigmoid(s_i - s_j))^2`` over the tied pairs (i < j) of ``[B, K]`` lists
    (0 without ties)."""
    K = scores.shape[1]
    iu, ju = torch.triu_indices(K, K, 1, device=scores.device)
    tied = labels[:, iu] == labels[:, ju]
    if not bool(tied.any()):
        return scores.new_zeros(())
    p = torch.sigmoid(scores[:, iu] - scores[:, ju])
    return ((0.5 - p) ** 2)[tied].mean()


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of non-tied queries (unique top label) whose top-labelled item scores highest."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    top = labels.max(1, keepdims=True)
    unique = (labels == top).sum(1) == 1
    if not unique.any():
        return math.nan
    return float((np.argmax(scores, 1) == np.argmax(labels, 1))[unique].mean())


@torch.no_grad()
def video_scores(
    encoder: VisualEncoder,
    videos: np.ndarray,
    anchors: np.ndarray,
    eps: float = 0.05,
) -> np.ndarray:
    """Score ``[N]`` of each video ``videos [N, T, H, W, 3]``: minus the smallest entropic OT
    cost (cosine cost) to any anchor video ``anchors [A, Ta, H, W, 3]`` (numpy Sinkhorn)."""
    from robopref.ot import sinkhorn

    x = encoder.embed(videos).astype(np.float64)
    y = encoder.embed(anchors).astype(np.float64)
    N, A = len(x), len(y)
    C = cosine_cost(x[:, None], y[None, :])  # [N, A, T, Ta]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # see ot_frame_rewards
        P = sinkhorn(None, None, C.reshape(N * A, *C.shape[-2:]), eps, max_iter=5000, tol=1e-6)
    cost = (P * C.reshape(P.shape)).sum((-1, -2)).reshape(N, A)
    return -cost.min(1)


def _split_preferred(items: np.ndarray, labels: np.ndarray):
    """Per query ``[B, K]``: the top-ranked video (the first on ties) as the anchor, and the other
    ``K - 1`` videos with their labels: ``(items [B, K-1], labels [B, K-1], anchors [B])``."""
    top = labels.argmax(1)
    keep = np.array([[j for j in range(items.shape[1]) if j != t] for t in top])
    return (
        np.take_along_axis(items, keep, 1),
        np.take_along_axis(labels, keep, 1),
        items[np.arange(len(items)), top],
    )


def align_encoder(
    encoder: VisualEncoder,
    videos: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    anchors: Sequence[int],
    config: AlignConfig | None = None,
    val_items: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Align ``encoder`` with ranked video queries (in place); return the per-epoch history.

    Args:
        encoder: the :class:`VisualEncoder` to train.
        videos: ``[N, T, H, W, 3]`` uint8, every video of the queries and the anchors.
        items: ``[Q, K]`` int video indices of each query; ``labels`` ``[Q, K]`` graded labels
            (higher = preferred, equal = tie).
        anchors: indices of the expert videos used as anchors; each query in each epoch gets one
            drawn at random (seeded).
        config: :class:`AlignConfig`.
        val_items, val_labels: held-out queries; their top-1 accuracy under
            :func:`video_scores` (closest anchor) is recorded each epoch as ``val_accuracy``.

    Returns:
        one dict per epoch with ``train_loss`` and (with validation) ``val_accuracy``; epoch
        ``-1`` holds the accuracy before training.
    """
    cfg = config if config is not None else AlignConfig()
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"videos: expected shape [N, T, H, W, 3], found {videos.shape}")
    items = np.asarray(items, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.float64)
    _check_queries(items, labels, len(videos), "items/labels")
    if cfg.anchor == "preferred" and items.shape[1] < 3:
        raise ValueError(
            f"items: anchor='preferred' needs queries of K >= 3 videos, found K={items.shape[1]}"
        )
    anchors = np.asarray(anchors, dtype=np.int64)
    if anchors.ndim != 1 or len(anchors) == 0:
        raise ValueError(f"anchors: expected a non-empty list of video indices, found {anchors}")
    has_val = val_items is not None and val_labels is not None
    if has_val:
        val_items = np.asarray(val_items, dtype=np.int64)
        val_labels = np.asarray(val_labels, dtype=np.float64)
        _check_queries(val_items, val_labels, len(videos), "val_items/val_labels")

    device = resolve_device(cfg.device)
    encoder.to(device)
    loss_fn = losses.get_loss(cfg.loss)
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)

    def val_row(epoch: int, loss: float) -> dict[str, float]:
        row = {"epoch": epoch, "train_loss": loss}
        if has_val:
            used = np.unique(val_items)
            s = video_scores(encoder, videos[used], videos[anchors], cfg.eps)
            full = np.zeros(len(videos))
            full[used] = s
            row["val_accuracy"] = top1_accuracy(full[val_items], val_labels)
        return row

    history = [val_row(-1, math.nan)]
    Q = len(items)
    for epoch in range(cfg.epochs):
        encoder.train()
        perm = rng.permutation(Q)
        total = 0.0
        for i in range(0, Q, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            B = len(idx)
            if cfg.anchor == "preferred":
                q_items, q_labels, anchor_ids = _split_preferred(items[idx], labels[idx])
            else:
                anchor_ids = anchors[rng.integers(0, len(anchors), size=B)]
                q_items, q_labels = items[idx], labels[idx]
            used, inv = np.unique(
                np.concatenate([anchor_ids, q_items.ravel()]), return_inverse=True
            )
            emb = encoder(torch.as_tensor(videos[used], device=device))  # [U, T, d]
            a = emb[torch.as_tensor(inv[:B], device=device)]  # [B, T, d]
            v = emb[torch.as_tensor(inv[B:], device=device)].reshape(
                B, q_items.shape[1], *emb.shape[1:]
            )
            dist = ot_distance(
                a[:, None].expand(-1, v.shape[1], -1, -1), v, cfg.eps, max_iter=cfg.sinkhorn_iters
            )  # [B, K] (K - 1 with the preferred video as anchor)
            scores = -dist / cfg.temperature
            lab = torch.as_tensor(q_labels, dtype=scores.dtype, device=device)
            loss = loss_fn(scores, lab, None)
            if cfg.tie_weight > 0:
                loss = loss + cfg.tie_weight * tie_penalty(scores, lab)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * B
        history.append(val_row(epoch, total / max(Q, 1)))
    encoder.eval()
    return history
