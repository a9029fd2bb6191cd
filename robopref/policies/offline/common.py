"""What the offline learners share: networks, the training loop, checkpoints, finite-loss guard.

A learner (:class:`~robopref.policies.offline.iql.IQL`, :class:`~robopref.policies.offline.awr.AWR`,
:class:`~robopref.policies.offline.filtered_bc.FilteredBC`) subclasses :class:`OfflineLearner` and
defines its networks (``_modules``), its optimiser and one gradient step (``_step``). The loop
here samples batches, logs, checkpoints and resumes, and checks that the losses stay finite.

Speed (the update is a few 256x256 matmuls; Python and allocator overhead matter on a CPU):

* the transitions are packed into one ``[N, 2 obs + act + 2]`` tensor, columns
  ``[obs | act | next_obs | reward | terminal]``, so a batch is one gather (into a preallocated
  block, with indices drawn into a preallocated tensor) and ``[obs, act]`` (the critics' input)
  is a view, not a concatenation;
* :class:`FusedAdam` steps the optimiser with the fused kernel and none of
  ``torch.optim.Adam.step``'s per-call bookkeeping;
* losses stay on the device: the finite check keeps, per loss, the first step at which it was
  not finite as a tensor (``torch.where``, no host sync) and reads it back only at logging and
  checkpoint steps and at the end; the error still names the exact step and loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from robopref.config import Device, Seed, StrictModel
from robopref.data import DataValidationError
from robopref.policies.offline.buffer import TransitionBuffer
from robopref.progress import bar as progress_bar
from robopref.utils import atomic_path, resolve_device, seed_everything

CHECKPOINT_NAME = "checkpoint.pt"
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class NonFiniteLossError(FloatingPointError):
    """A learner's loss became NaN or infinite; the message names the learner, loss and step."""


class LearnerConfig(StrictModel):
    """Options every offline learner has (network size, optimiser, loop, logging, checkpoints).

    An unknown option is an error that lists the valid ones.
    """

    lr: float = Field(3e-4, gt=0.0)
    """Adam learning rate."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of every network."""
    log_std_min: float = -5.0
    """Actor's log standard deviation is clipped to this range."""
    log_std_max: float = 2.0
    """Upper end of the actor's log standard deviation."""
    batch_size: int = Field(256, ge=1)
    """Transitions per gradient step."""
    steps: int = Field(100_000, ge=1)
    """Total gradient steps."""
    seed: Seed = 0
    """Seeds the networks' initialisation and the minibatch order."""
    device: Device = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda:0``, ..."""
    fused_adam: bool = True
    """One fused kernel per optimiser step (CPU and CUDA)."""
    log_dir: str | None = None
    """TensorBoard scalars when set."""
    log_every: int = Field(1000, ge=1)
    """Also how often losses are checked for NaN/inf."""
    checkpoint_dir: str | None = None
    """Checkpoint + resume when set."""
    checkpoint_every: int = Field(10_000, ge=1)
    """Gradient steps between checkpoints."""

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown option(s) {unknown} for {cls.__name__}; "
                    f"valid options: {', '.join(cls.model_fields)}"
                )
        return data


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """ReLU MLP ``in_dim -> hidden... -> out_dim`` (no output activation).

    The ReLUs work in place (a Linear's backward does not need its output): one allocation less
    per layer, measurably faster on a CPU.
    """
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(inplace=True)]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class GaussianPolicy(nn.Module):
    """``pi(a | s) = N(tanh(mlp(s)), exp(log_std)^2)``, diagonal, state-independent std."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], log_std_range=(-5.0, 2.0)
    ):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_range = tuple(log_std_range)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return mean ``[B, act_dim]`` in ``(-1, 1)`` and std ``[act_dim]``."""
        mean = torch.tanh(self.net(obs))
        std = self.log_std.clamp(*self.log_std_range).exp()
        return mean, std

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``log pi(act | obs)`` summed over action dimensions, ``[B]``.

        Written out rather than through ``torch.distributions.Normal``: same value, fewer ops.
        """
        mean = torch.tanh(self.net(obs))
        log_std = self.log_std.clamp(*self.log_std_range)
        z = (act - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)


# the kernel Adam(fused=True).step() calls; private to torch (see FusedAdam)
_FUSED_ADAM_KERNEL = getattr(torch, "_fused_adam_", None)


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` with a leaner step: same update, state and checkpoints.

    ``torch.optim.Adam.step`` spends ~0.3 ms per call on one CPU thread (a third of IQL's
    optimiser time, ~3 % of its update) re-collecting the parameter, gradient and state lists,
    grouping them by device and dtype and incrementing 19 step counters one by one, before its
    one fused kernel. :meth:`fast_step` keeps those lists (rebuilt after
    :meth:`load_state_dict`) and calls the same kernel, ``torch._fused_adam_``, per group, with
    the group's current learning rate. It falls back to :meth:`step` whenever the fast path's
    assumptions do not hold (first step, before the state exists; a parameter without a
    gradient; amsgrad, maximize or weight decay), so its result is bitwise that of ``step()``.

    ``torch._fused_adam_`` is private: where a torch build lacks it (or changes its signature,
    which a test pins against ``step()`` bit for bit), :meth:`fast_step` is plain :meth:`step`.
    """

    def __init__(self, params, lr: float):
        super().__init__(params, lr=lr, fused=True)
        self._lists: list[tuple[list, list, list, list]] | None = None

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._lists = None  # the state tensors are new objects

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._lists = None

    def _build_lists(self) -> list[tuple[list, list, list, list]] | None:
        out = []
        for g in self.param_groups:
            if g["amsgrad"] or g["maximize"] or g["weight_decay"] or g["differentiable"]:
                return None
            states = [self.state.get(p) for p in g["params"]]
            if any(not s for s in states):
                return None  # state not created yet: step() creates it
            out.append(
                (
                    g["params"],
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [s["step"] for s in states],
                )
            )
        return out

    @torch.no_grad()
    def fast_step(self) -> None:
        """One Adam step of every group (as :meth:`step`, without its per-call bookkeeping)."""
        if _FUSED_ADAM_KERNEL is None:
            self.step()
            return
        if self._lists is None:
            self._lists = self._build_lists()
        grads = [[p.grad for p in params] for params, *_ in self._lists or ()]
        if self._lists is None or any(g is None for gs in grads for g in gs):
            self.step()
            self._lists = None
            return
        for group, (params, exp_avgs, exp_avg_sqs, steps), gs in zip(
            self.param_groups, self._lists, grads
        ):
            beta1, beta2 = group["betas"]
            torch._foreach_add_(steps, 1)
            _FUSED_ADAM_KERNEL(
                params,
                gs,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=group["eps"],
                maximize=False,
            )


def adam(groups: list, lr: float, fused: bool) -> torch.optim.Adam:
    """Adam over parameters or parameter groups; ``fused`` uses the single-kernel implementation
    (:class:`FusedAdam`; step it with :func:`adam_step`)."""
    if fused:
        return FusedAdam(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr, foreach=True)


def adam_step(opt: torch.optim.Adam) -> None:
    """``opt.step()``, through :meth:`FusedAdam.fast_step` when ``opt`` is one."""
    if isinstance(opt, FusedAdam):
        opt.fast_step()
    else:
        opt.step()


class FiniteGuard:
    """Records, without a host sync, the first step at which each watched loss was not finite."""

    def __init__(self, names: tuple[str, ...], device: torch.device):
        self.names = names
        self.first_bad = torch.full((len(names),), -1, dtype=torch.long, device=device)

    def watch(self, step: int, losses: torch.Tensor) -> None:
        """``losses``: ``[len(names)]`` detached loss values of gradient step ``step``."""
        bad = ~torch.isfinite(losses) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check(self, learner: str) -> None:
        """Raise :class:`NonFiniteLossError` naming the earliest non-finite loss and its step."""
        first = self.first_bad.tolist()
        bad = [(s, n) for s, n in zip(first, self.names) if s >= 0]
        if bad:
            step, name = min(bad)
            raise NonFiniteLossError(
                f"{learner}: loss '{name}' is not finite at gradient step {step} "
                "(check the rewards and observations for NaN/inf, or lower the learning rate)"
            )


def pack_buffer(buffer: TransitionBuffer, device: torch.device) -> torch.Tensor:
    """``[N, 2 obs_dim + act_dim + 2]`` float32: ``[obs | act | next_obs | reward | terminal]``."""
    for name in ("obs", "act", "reward", "next_obs", "terminal"):
        arr = getattr(buffer, name)
        if not np.isfinite(arr).all():
            rows = np.unique(np.nonzero(~np.isfinite(arr))[0])
            raise DataValidationError(
                f"TransitionBuffer: field '{name}': expected finite values, found NaN/inf "
                f"in {len(rows)} transition(s), first at index {int(rows[0])}"
            )
    packed = np.concatenate(
        [buffer.obs, buffer.act, buffer.next_obs, buffer.reward[:, None], buffer.terminal[:, None]],
        axis=1,
    )
    return torch.as_tensor(packed, device=device)


class Batch:
    """Views into one gathered ``[B, 2 obs + act + 2]`` block (see :func:`pack_buffer`)."""

    __slots__ = ("obs", "act", "obs_act", "next_obs", "reward", "terminal")

    def __init__(self, block: torch.Tensor, obs_dim: int, act_dim: int):
        o, a = obs_dim, act_dim
        self.obs = block[:, :o]
        self.act = block[:, o : o + a]
        self.obs_act = block[:, : o + a]
        self.next_obs = block[:, o + a : 2 * o + a]
        self.reward = block[:, 2 * o + a]
        self.terminal = block[:, 2 * o + a + 1]

    @classmethod
    def from_dict(cls, batch: dict[str, torch.Tensor]) -> Batch:
        """From tensors ``obs [B, o]``, ``act [B, a]``, ``reward [B]``, ``next_obs``, ``terminal``."""
        block = torch.cat(
            [
                batch["obs"],
                batch["act"],
                batch["next_obs"],
                batch["reward"][:, None],
                batch["terminal"][:, None],
            ],
            dim=1,
        )
        return cls(block, batch["obs"].shape[1], batch["act"].shape[1])


class OfflineLearner:
    """Base of the offline learners: acting, the training loop, checkpoints.

    Subclasses set ``NAME``, ``FORMAT``, ``LOSSES`` (names of the losses ``_step`` returns, in
    order), build ``self.actor`` (a :class:`GaussianPolicy`) and their other networks and
    optimiser in ``__init__`` after calling ``super().__init__``, and implement ``_modules``
    (name -> module or optimiser, saved in checkpoints) and ``_step``.
    """

    NAME: ClassVar[str] = "learner"
    FORMAT: ClassVar[str] = "robopref.learner/1"
    LOSSES: ClassVar[tuple[str, ...]] = ()
    config_cls: ClassVar[type[LearnerConfig]] = LearnerConfig

    def __init__(self, obs_dim: int, act_dim: int, config: LearnerConfig | None = None):
        self.config = cfg = config if config is not None else self.config_cls()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        torch.manual_seed(cfg.seed)
        # Separate CPU generators: batch indices and exploration noise are reproducible and
        # are saved in checkpoints, so a resumed run continues the same sample stream.
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)
        self.act_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.actor = GaussianPolicy(
            obs_dim, act_dim, tuple(cfg.hidden), (cfg.log_std_min, cfg.log_std_max)
        ).to(self.device)

    # ------------------------------------------------------------- subclass hooks
    def _modules(self) -> dict[str, Any]:
        raise NotImplementedError

    def _step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One gradient step; returns ``[len(LOSSES)]`` detached losses and other statistics."""
        raise NotImplementedError

    def _train_rows(self, buffer: TransitionBuffer) -> np.ndarray | None:
        """Indices of the transitions to train on (``None``: all of them)."""
        return None

    def _lr_schedule(self) -> None:
        """Set learning rates for the coming step (default: constant)."""

    def _before_training(self, steps_to_run: int) -> None:
        """Called by :meth:`train` before its loop, with the number of steps it will run."""

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Action(s) for ``obs`` ``[obs_dim]`` or ``[N, obs_dim]``: ``[act_dim]`` or ``[N, act_dim]``.

        ``deterministic=True`` returns the policy mean; otherwise a Gaussian sample. Actions are
        clipped to ``[-1, 1]`` (float32).
        """
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"act: field 'obs': expected [{self.obs_dim}] or [N, {self.obs_dim}], "
                f"found shape {obs.shape}"
            )
        x = torch.as_tensor(obs.reshape(-1, self.obs_dim), device=self.device)
        mean, std = self.actor(x)
        action = mean.cpu()
        if not deterministic:
            action = action + std.cpu() * torch.randn(action.shape, generator=self.act_gen)
        action = action.clamp(-1.0, 1.0).numpy()
        return action[0] if single else action

    __call__ = act

    # ---------------------------------------------------------------- training
    def update(self, batch: dict[str, torch.Tensor] | Batch) -> dict[str, torch.Tensor]:
        """One gradient step on a batch (dict of tensors or :class:`Batch`); detached statistics."""
        if isinstance(batch, dict):
            batch = Batch.from_dict(batch)
        self._lr_schedule()
        losses, stats = self._step(batch)
        self.step += 1
        return {**dict(zip(self.LOSSES, losses)), **stats}

    def train(
        self,
        buffer: TransitionBuffer,
        steps: int | None = None,
        progress: bool = True,
        label: str | None = None,
    ) -> dict:
        """Train until ``steps`` total gradient steps (default ``config.steps``) are done.

        When ``config.checkpoint_dir`` holds a checkpoint further on than this learner, training
        resumes from it (networks, optimiser, sampling generator, step); a checkpoint is written
        every ``config.checkpoint_every`` steps and at the end. ``steps`` counts from zero, not
        from the resume point, so an interrupted run restarted with the same call finishes
        exactly where an uninterrupted one would. Losses are checked for NaN/inf every
        ``log_every`` steps, before each checkpoint and at the end
        (:class:`NonFiniteLossError` names the first bad step and loss). Returns the last step's
        statistics as floats plus ``step``. ``label`` names the progress bar (e.g.
        ``policy[pearl]``; default the learner's name).
        """
        cfg = self.config
        steps = cfg.steps if steps is None else int(steps)
        if buffer.obs_dim != self.obs_dim or buffer.act_dim != self.act_dim:
            raise DataValidationError(
                f"{self.NAME}.train: buffer 'obs'/'act': expected dims "
                f"({self.obs_dim}, {self.act_dim}), found ({buffer.obs_dim}, {buffer.act_dim})"
            )
        ckpt = Path(cfg.checkpoint_dir) / CHECKPOINT_NAME if cfg.checkpoint_dir else None
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if state.get("step", 0) > self.step:  # never roll an agent back to an older state
                self._load_state(state)
        data = pack_buffer(buffer, self.device)
        rows = self._train_rows(buffer)
        if rows is not None:
            data = data[torch.as_tensor(rows, device=self.device)]
        n = len(data)
        guard = FiniteGuard(self.LOSSES, self.device)
        writer = None
        if cfg.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(cfg.log_dir, purge_step=self.step + 1 if self.step else None)
        self._before_training(max(steps - self.step, 0))
        stats: dict[str, torch.Tensor] = {}
        bar = progress_bar(
            steps, label or self.NAME, initial=min(self.step, steps), enabled=progress
        )
        # Preallocated batch: the indices are drawn into one buffer and the rows gathered into
        # another (a third of the time of allocating both every step). Reusing the block is safe:
        # a step's autograd graph, the only holder of views into it, is gone when _step returns.
        idx = torch.empty(cfg.batch_size, dtype=torch.long)
        block = torch.empty(cfg.batch_size, data.shape[1], dtype=data.dtype, device=self.device)
        idx_dev = idx if self.device.type == "cpu" else torch.empty_like(idx, device=self.device)
        try:
            while self.step < steps:
                torch.randint(0, n, (cfg.batch_size,), generator=self.sample_gen, out=idx)
                if idx_dev is not idx:
                    idx_dev.copy_(idx)
                torch.index_select(data, 0, idx_dev, out=block)
                batch = Batch(block, self.obs_dim, self.act_dim)
                self._lr_schedule()
                losses, extra = self._step(batch)
                guard.watch(self.step + 1, losses)
                self.step += 1
                bar.update(1)
                at_log = self.step % cfg.log_every == 0 or self.step == steps
                at_ckpt = ckpt is not None and (
                    self.step % cfg.checkpoint_every == 0 or self.step == steps
                )
                if at_log or at_ckpt:
                    guard.check(self.NAME)
                    stats = {**dict(zip(self.LOSSES, losses)), **extra}
                if at_log:
                    values = {k: float(v) for k, v in stats.items()}
                    bar.set_postfix({k: f"{values[k]:.3g}" for k in self.LOSSES})
                    if writer is not None:
                        prefix = self.NAME.lower()
                        for k, v in values.items():
                            writer.add_scalar(f"{prefix}/{k}", v, self.step)
                        writer.add_scalar(f"{prefix}/actor_lr", self._actor_lr(), self.step)
                if at_ckpt:
                    self.save(ckpt)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        out = {k: float(v) for k, v in stats.items()}
        out["step"] = self.step
        return out

    def _actor_lr(self) -> float:
        return self.config.lr

    # ------------------------------------------------------------- save/load
    def state_dict(self) -> dict:
        return {
            "format": self.FORMAT,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": self.config.model_dump(mode="json"),
            "step": self.step,
            **{name: m.state_dict() for name, m in self._modules().items()},
            "sample_gen": self.sample_gen.get_state(),
            "act_gen": self.act_gen.get_state(),
        }

    def _load_state(self, state: dict) -> None:
        if state.get("format") != self.FORMAT:
            raise ValueError(
                f"{self.NAME} checkpoint: field 'format': expected {self.FORMAT!r}, "
                f"found {state.get('format')!r}"
            )
        if (state["obs_dim"], state["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"{self.NAME} checkpoint: fields 'obs_dim'/'act_dim': expected "
                f"({self.obs_dim}, {self.act_dim}), found ({state['obs_dim']}, {state['act_dim']})"
            )
        for name, m in self._modules().items():
            m.load_state_dict(state[name])
        self.sample_gen.set_state(state["sample_gen"])
        self.act_gen.set_state(state["act_gen"])
        self.step = int(state["step"])

    def save(self, path: str | Path) -> None:
        """Write networks, optimiser, generators, step and config to ``path``, atomically."""
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None):
        """Rebuild a learner saved by :meth:`save`; ``device`` overrides the saved config's."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = cls.config_cls.model_validate(state["config"])
        if device is not None:
            config = config.model_copy(update={"device": device})
        agent = cls(state["obs_dim"], state["act_dim"], config)
        agent._load_state(state)
        return agent
