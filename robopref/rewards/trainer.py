"""Train a reward model from preference queries with any loss of the shared core.

    trainer = RewardTrainer(MLPReward(obs_dim, act_dim), RewardTrainerConfig(loss="bt", epochs=50))
    history = trainer.fit(dataset, queries)            # held-out split by val_fraction
    trainer.accuracy(dataset, test_queries)             # top-1 agreement on non-tied queries

A step: gather a minibatch of pre-padded segments, score each item by its summed reward (for an
ensemble: per member; for a Gaussian reward: per reparameterised sample), apply
``robopref.losses.get_loss(config.loss)`` to ``(scores [B, K], labels [B, K], mask [B, K])`` plus
the model's regulariser, and take an AdamW step. Soft pair labels use the Bradley-Terry loss with
``soft=True``.

Checkpoints (``checkpoint_dir/last.pt``, written atomically after every epoch) hold the model,
the optimiser, the epoch, the random-generator states, early-stopping state and the history; a
``fit`` that finds one resumes from it and gives the same result as an uninterrupted run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

import robopref.losses as losses
from robopref.config import Device, Seed, StrictModel
from robopref.data import PreferenceQueries, TrajectoryDataset
from robopref.progress import bar as progress_bar
from robopref.rewards.models import RewardModel, model_checkpoint, model_from_checkpoint
from robopref.rewards.segments import SegmentTensors, gather_segments, query_batch
from robopref.utils import atomic_path, resolve_device


class RewardTrainerConfig(StrictModel):
    """Settings of :class:`RewardTrainer`."""

    loss: str = "bt"
    """Name in the loss core (``bt``, ``slic``, ``ipo``, ``listnet``, ``plackett_luce``,
    ``lipo_lambda``); soft pair labels need ``bt``."""
    loss_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the loss (e.g. ``{"beta": 0.1}`` for IPO)."""
    lr: float = Field(3e-4, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    batch_size: int = Field(128, ge=1)
    """Queries per minibatch."""
    epochs: int = Field(100, ge=0)
    """Maximum passes over the training queries."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the queries held out for validation when ``fit`` gets no ``val_queries``
    (0 disables validation and early stopping)."""
    patience: int | None = Field(10, ge=1)
    """Stop after this many epochs without a better held-out accuracy (ties broken by a lower
    held-out loss); ``None`` never stops early."""
    restore_best: bool = True
    """At the end, load the weights of the best held-out epoch."""
    seed: Seed = 0
    """Seeds the validation split, minibatch order and reward sampling."""
    device: Device = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda:0``, ..."""
    log_dir: str | None = None
    """TensorBoard directory (scalars per epoch), or ``None``."""
    checkpoint_dir: str | None = None
    """Where ``last.pt`` is written after each epoch and resumed from."""
    use_confidence: bool = True
    """Weight each query's loss by ``PreferenceQueries.confidence``."""
    num_samples: int = Field(1, ge=1)
    """Reparameterised samples per step for a Gaussian reward."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the gradient norm to this value (``None``: no clipping)."""
    quiet: bool = False
    """No progress bar."""

    @model_validator(mode="after")
    def _check_loss(self) -> RewardTrainerConfig:
        losses.get_loss(self.loss, **self.loss_options)  # unknown name or option: a clear error
        return self

    @property
    def soft_capable(self) -> bool:
        """Whether ``loss`` is the Bradley-Terry loss (the one that takes soft pair labels)."""
        return losses.LOSSES[self.loss.lower().replace("-", "_")] is losses.pairwise_logistic_loss


class RewardTrainer:
    """Fits a :class:`~robopref.rewards.models.RewardModel` to preference queries.

    Attributes:
        model: the reward model (moved to ``device``).
        config: the :class:`RewardTrainerConfig`.
        device: the resolved ``torch.device``.
        history: one dict per finished epoch: ``epoch``, ``train_loss``, ``train_accuracy`` and,
            with validation, ``val_loss``, ``val_accuracy``.
    """

    CHECKPOINT_NAME = "last.pt"

    def __init__(self, model: RewardModel, config: RewardTrainerConfig | None = None) -> None:
        self.config = config if config is not None else RewardTrainerConfig()
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        self.history: list[dict[str, float]] = []
        self._loss_fn = losses.get_loss(self.config.loss, **self.config.loss_options)
        self._epoch = 0
        self._shuffle_gen = torch.Generator().manual_seed(self.config.seed)
        self._noise_gen = torch.Generator(self.device).manual_seed(self.config.seed + 1)
        self._best: dict[str, Any] = {
            "accuracy": -math.inf,
            "loss": math.inf,
            "state": None,
            "epoch": -1,
        }
        self._bad_epochs = 0
        self._finished = False
        self._num_train = -1

    # ------------------------------------------------------------------ data
    def _segments(
        self, dataset: TrajectoryDataset, queries: PreferenceQueries, field: str
    ) -> SegmentTensors:
        if not isinstance(queries, PreferenceQueries):
            raise TypeError(f"{field}: expected PreferenceQueries, found {type(queries).__name__}")
        if queries.label_kind not in ("graded", "soft_pair"):
            raise ValueError(
                f"{field}: field 'label_kind': expected 'graded' or 'soft_pair', found {queries.label_kind!r}"
            )
        if queries.label_kind == "soft_pair" and not self.config.soft_capable:
            raise ValueError(
                f"{field}: soft pair labels need loss 'bt' (soft cross-entropy), found loss {self.config.loss!r}"
            )
        seg = self._gather(dataset, queries)
        if not self.config.use_confidence:
            seg.confidence = torch.ones_like(seg.confidence)
        return seg

    def _gather(self, dataset: TrajectoryDataset, queries: PreferenceQueries) -> SegmentTensors:
        m = self.model
        return gather_segments(dataset, queries, m.obs_dim, m.act_dim, obs_shape=m.obs_shape)

    def _loss(
        self, scores: torch.Tensor, labels: torch.Tensor, item_mask: torch.Tensor, soft: bool
    ) -> torch.Tensor:
        """Preference loss of ``scores [B, K]`` against ``labels [B, K]``."""
        if soft:
            return self._loss_fn(scores, labels, item_mask, soft=True)
        return self._loss_fn(scores, labels, item_mask)

    # ------------------------------------------------------------------ training
    def _step(self, batch: SegmentTensors, soft: bool) -> torch.Tensor:
        """One optimiser step; returns ``[3]`` (loss * B, top-1 correct, non-tied count)."""
        scores, reg = self.model.training_terms(
            batch.obs, batch.act, batch.step_mask, self.config.num_samples, self._noise_gen
        )  # [S, B, K], scalar
        S, B, K = scores.shape
        # Confidence weighting: the gradient of query b is scaled by w_b (w = 0: the query has no
        # effect) while the scores' values stay the same, so any loss of the core, whatever its
        # reduction, is weighted exactly as sum_b w_b * loss_b.
        w = batch.confidence.view(1, B, 1)
        if not bool((w == 1).all()):
            scores = w * scores + (1 - w) * scores.detach()
        labels, item_mask = batch.labels, batch.item_mask
        if S > 1:  # every member / sample gets its own copy of the query's labels
            labels, item_mask = labels.repeat(S, 1), item_mask.repeat(S, 1)
        loss = self._loss(scores.reshape(S * B, K), labels, item_mask, soft) + reg
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            correct, counted = _top1(scores.detach().mean(0), batch.labels, batch.item_mask, soft)
            return torch.stack([loss.detach() * B, correct.to(loss.dtype), counted.to(loss.dtype)])

    def fit(
        self,
        dataset: TrajectoryDataset,
        queries: PreferenceQueries,
        val_queries: PreferenceQueries | None = None,
        label: str | None = None,
    ) -> list[dict[str, float]]:
        """Train on ``queries`` (segments of ``dataset``); return the per-epoch history.

        Without ``val_queries`` a seeded ``val_fraction`` of ``queries`` is held out. With a
        ``checkpoint_dir`` holding ``last.pt`` training resumes from it (the checkpoint must come
        from the same model architecture, number of training queries and the config fields in
        :attr:`RESUME_FIELDS`, else a ``ValueError`` says which differs). Training runs from the
        trainer's current epoch to ``config.epochs``: a second ``fit`` on the same trainer does
        not start over. The reported ``train_loss`` is the batch-size weighted mean of the
        minibatch objectives (preference loss, not confidence-weighted, plus regulariser).
        ``label`` names the progress bar (e.g. ``reward[pearl]``; default ``reward``).
        """
        cfg = self.config
        if queries.num_queries == 0:
            raise ValueError("queries: expected at least one query, found 0")
        if val_queries is None and cfg.val_fraction > 0 and queries.num_queries >= 2:
            perm = np.random.default_rng(cfg.seed).permutation(queries.num_queries)
            n_val = max(1, int(round(cfg.val_fraction * queries.num_queries)))
            val_queries, queries = (
                queries.subset(np.sort(perm[:n_val])),
                queries.subset(np.sort(perm[n_val:])),
            )
        soft = queries.label_kind == "soft_pair"
        train = self._segments(dataset, queries, "queries").to(self.device)
        self._num_train = len(train)
        val = (
            None
            if val_queries is None
            else self._segments(dataset, val_queries, "val_queries").to(self.device)
        )
        val_soft = val_queries is not None and val_queries.label_kind == "soft_pair"

        ckpt_path = (
            None if cfg.checkpoint_dir is None else Path(cfg.checkpoint_dir) / self.CHECKPOINT_NAME
        )
        if ckpt_path is not None and ckpt_path.exists():
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            self._check_resumable(state, ckpt_path, len(train))
            self._load_state(state)

        writer = None
        if cfg.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(cfg.log_dir)
        bar = progress_bar(
            cfg.epochs,
            label or "reward",
            unit="epoch",
            initial=self._epoch,
            enabled=not (cfg.quiet or self._finished),
        )
        for epoch in range(self._epoch, cfg.epochs):
            if self._finished:
                break
            self.model.train()
            perm = torch.randperm(len(train), generator=self._shuffle_gen).to(self.device)
            sums = torch.zeros(3, device=self.device)  # one device sync per epoch
            for i in range(0, len(train), cfg.batch_size):
                sums += self._step(train[perm[i : i + cfg.batch_size]], soft)
            total, correct, counted = sums.tolist()
            row = {
                "epoch": epoch,
                "train_loss": total / len(train),
                "train_accuracy": correct / counted if counted else math.nan,
            }
            if val is not None:
                v_loss, v_acc = self._evaluate(val, val_soft)
                row.update(val_loss=v_loss, val_accuracy=v_acc)
                self._track_best(row)
            self.history.append(row)
            self._epoch = epoch + 1
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key.replace("_", "/", 1), value, epoch)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch"})
            bar.update(1)
            if ckpt_path is not None:
                self.save(ckpt_path)
        bar.close()
        if writer is not None:
            writer.close()
        if cfg.restore_best and self._best["state"] is not None:
            self.model.load_state_dict(self._best["state"])
        return self.history

    def _track_best(self, row: dict[str, float]) -> None:
        acc = row["val_accuracy"] if not math.isnan(row["val_accuracy"]) else -math.inf
        better = acc > self._best["accuracy"] or (
            acc == self._best["accuracy"] and row["val_loss"] < self._best["loss"]
        )
        if better:
            self._best = {
                "accuracy": acc,
                "loss": row["val_loss"],
                "epoch": row["epoch"],
                "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            }
            self._bad_epochs = 0
        else:
            self._bad_epochs += 1
            if self.config.patience is not None and self._bad_epochs >= self.config.patience:
                self._finished = True

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _scores(self, seg: SegmentTensors, batch_size: int = 1024) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        out = []
        batch_size = query_batch(self.model, seg, batch_size)
        for i in range(0, len(seg), batch_size):
            b = seg[i : i + batch_size].to(self.device)
            out.append(self.model.segment_scores(b.obs, b.act, b.step_mask))
        self.model.train(was_training)
        return torch.cat(out)

    @torch.no_grad()
    def _evaluate(self, seg: SegmentTensors, soft: bool) -> tuple[float, float]:
        scores = self._scores(seg)
        seg = seg.to(self.device)
        loss = float(self._loss(scores, seg.labels, seg.item_mask, soft))
        correct, counted = (int(x) for x in _top1(scores, seg.labels, seg.item_mask, soft))
        return loss, correct / counted if counted else math.nan

    def scores(self, dataset: TrajectoryDataset, queries: PreferenceQueries) -> np.ndarray:
        """``[Q, K]`` segment returns under the model's mean reward (padding items: NaN)."""
        seg = self._gather(dataset, queries)
        s = self._scores(seg).cpu().numpy().astype(np.float64)
        return np.where(queries.mask, s, np.nan)

    def accuracy(self, dataset: TrajectoryDataset, queries: PreferenceQueries) -> float:
        """Fraction of non-tied queries whose preferred item the model scores highest.

        A query is tied when its top label is shared by two valid items (graded labels) or
        ``y = 0.5`` (soft pairs); NaN when every query is tied.
        """
        seg = self._gather(dataset, queries)
        soft = queries.label_kind == "soft_pair"
        correct, counted = (
            int(x) for x in _top1(self._scores(seg).cpu(), seg.labels, seg.item_mask, soft)
        )
        return correct / counted if counted else math.nan

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimiser, epoch, rng states, early stopping."""
        state = model_checkpoint(self.model)
        state.update(
            trainer_config=self.config.model_dump(mode="json"),
            optimizer_state=self.optimizer.state_dict(),
            epoch=self._epoch,
            history=list(self.history),
            rng={
                "shuffle": self._shuffle_gen.get_state(),
                "noise": self._noise_gen.get_state().cpu(),
                "noise_device": self.device.type,
            },
            num_train_queries=self._num_train,
            best=dict(self._best),
            bad_epochs=self._bad_epochs,
            finished=self._finished,
        )
        return state

    # Config fields that change what training computes: a checkpoint written with other values
    # is not resumed (epochs, device, logging and checkpoint paths may change).
    RESUME_FIELDS = (
        "loss", "loss_options", "lr", "weight_decay", "batch_size", "val_fraction", "seed",
        "use_confidence", "num_samples", "grad_clip",
    )  # fmt: skip

    def _check_resumable(self, state: dict[str, Any], path: Path, num_train: int) -> None:
        for key in ("model_class", "model_kwargs"):
            mine = model_checkpoint(self.model)[key]
            if state.get(key) != mine:
                raise ValueError(
                    f"{path}: field '{key}': expected {mine!r} (this trainer's model), found {state.get(key)!r}"
                )
        saved = state.get("trainer_config", {})
        mine = self.config.model_dump(mode="json")
        for key in self.RESUME_FIELDS:
            if saved.get(key) != mine[key]:
                raise ValueError(
                    f"{path}: config field '{key}': expected {mine[key]!r} (this trainer's), found {saved.get(key)!r}; "
                    "use another checkpoint_dir to start afresh"
                )
        if state.get("num_train_queries") != num_train:
            raise ValueError(
                f"{path}: field 'num_train_queries': expected {num_train} (this fit's), found {state.get('num_train_queries')}"
            )

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self._epoch = int(state["epoch"])
        self.history = [dict(r) for r in state["history"]]
        self._shuffle_gen.set_state(state["rng"]["shuffle"])
        if state["rng"].get("noise_device") == self.device.type:
            self._noise_gen.set_state(state["rng"]["noise"])
        else:  # e.g. saved on CUDA, resumed on CPU: the generator kinds differ, reseed instead
            self._noise_gen.manual_seed(self.config.seed + 1 + self._epoch)
        self._best = dict(state["best"])
        self._bad_epochs = int(state["bad_epochs"])
        self._num_train = int(state.get("num_train_queries", -1))
        self._finished = bool(state["finished"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the full trainer state to ``path`` atomically (readable by :func:`load_reward`)."""
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    @classmethod
    def load(
        cls, path: str | os.PathLike, config: RewardTrainerConfig | None = None
    ) -> RewardTrainer:
        """Rebuild a trainer (model, optimiser, epoch, history, rng) saved by :meth:`save`.

        ``config`` overrides the saved trainer config (e.g. a different device or more epochs).
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "trainer_config" not in state:
            raise ValueError(
                f"{path}: field 'trainer_config': expected a trainer checkpoint, found a model-only one"
            )
        config = (
            config
            if config is not None
            else RewardTrainerConfig.model_validate(state["trainer_config"])
        )
        trainer = cls(model_from_checkpoint(state), config)
        trainer._load_state(state)
        return trainer


def _top1(
    scores: torch.Tensor, labels: torch.Tensor, item_mask: torch.Tensor, soft: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 agreement over non-tied queries of ``scores [B, K]``: (correct, counted) tensors.

    A query is tied when its top label is shared by two valid items (graded labels) or its soft
    label is 0.5.
    """
    labels, item_mask = labels.to(scores.device), item_mask.to(scores.device)
    lab = labels.masked_fill(~item_mask, -math.inf)
    top = lab.max(dim=1, keepdim=True).values
    untied = ((lab == top) & item_mask).sum(1) == 1
    if soft:
        untied = untied & (labels[:, 0] != 0.5)
    pred = scores.masked_fill(~item_mask, -math.inf).argmax(1)
    correct = (pred == lab.argmax(1)) & untied
    return correct.sum(), untied.sum()
