"""Reward models r(o, a): an MLP, an ensemble of MLPs and a Gaussian (robust) reward.

Every model maps observations ``[..., obs_dim]`` and actions ``[..., act_dim]`` to a reward
``[...]`` per step (any leading shape). A segment's score is the sum of its step rewards
(:func:`robopref.losses.segment_return_scores`), which the preference losses compare.

``act_dim = 0`` gives a state-only reward (``act`` may then be ``None``).

Checkpoints (:func:`save_reward` / :func:`load_reward`) store the class name, the constructor
arguments and the ``state_dict``, so a model is rebuilt without pickled code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import robopref.losses as losses
from robopref.utils import atomic_path

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
OUTPUTS = ("tanh", None)
CHECKPOINT_FORMAT = "robopref.reward/1"


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "leaky_relu"
) -> nn.Sequential:
    """``in_dim -> hidden[0] -> ... -> out_dim`` with ``activation`` between linear layers."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, found {activation!r}")
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, int(h)), ACTIVATIONS[activation]()]
        d = int(h)
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def gaussian_kl_regulariser(
    logvar: torch.Tensor, prior_std: float, step_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over valid steps of KL(N(mu, sigma^2) || N(mu, sigma0^2)), sigma0 = ``prior_std``.

    With equal means the KL is ``0.5 * (log sigma0^2 - logvar + exp(logvar) / sigma0^2 - 1)``
    (nats per step); it is zero exactly at sigma = sigma0 and convex in ``logvar``.

    Args:
        logvar: ``[...]`` log-variance per step.
        prior_std: sigma0 > 0, in reward units.
        step_mask: ``[...]`` bool, True for steps that count; ``None`` counts every step.
    """
    log_prior_var = 2.0 * math.log(prior_std)
    kl = 0.5 * (log_prior_var - logvar + torch.exp(logvar - log_prior_var) - 1.0)
    if step_mask is None:
        return kl.mean()
    m = step_mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


class RewardModel(nn.Module):
    """Base class: input checks, ``predict`` (numpy in, numpy out) and segment scores.

    Subclasses implement :meth:`forward` (the reward used at evaluation time) and may override
    :meth:`training_terms` (what the preference loss sees during training).
    """

    def __init__(self, obs_dim: int, act_dim: int, **kwargs: Any) -> None:
        super().__init__()
        if obs_dim < 0 or act_dim < 0 or obs_dim + act_dim == 0:
            raise ValueError(
                f"obs_dim/act_dim: expected non-negative sizes, not both 0, found {obs_dim}/{act_dim}"
            )
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        # Constructor arguments, stored in checkpoints to rebuild the model.
        self.init_kwargs: dict[str, Any] = {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            **kwargs,
        }

    # Steps per forward pass when scoring without gradients (predict, segment scores); None:
    # no limit. Image rewards set one so that a batch's activations stay small.
    max_batch_steps: int | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Per-step observation shape the model reads: ``(obs_dim,)``, or ``(H, W, 3)`` frames."""
        return (self.obs_dim,)

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """numpy observations -> the tensor ``forward`` takes (float32 vectors by default)."""
        return torch.as_tensor(obs, dtype=torch.float32)

    def inputs(self, obs: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
        """Check shapes and return the network input ``[..., obs_dim + act_dim]``."""
        if obs.shape[-1:] != (self.obs_dim,):
            raise ValueError(f"obs: expected shape [..., {self.obs_dim}], found {tuple(obs.shape)}")
        if self.act_dim == 0:
            return obs
        if act is None:
            raise ValueError(f"act: expected shape [..., {self.act_dim}], found None")
        if act.shape != obs.shape[:-1] + (self.act_dim,):
            raise ValueError(
                f"act: expected shape {tuple(obs.shape[:-1]) + (self.act_dim,)} (obs's leading dims), "
                f"found {tuple(act.shape)}"
            )
        return torch.cat([obs, act.to(obs.dtype)], dim=-1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        """Reward ``[...]`` of ``obs [..., obs_dim]`` and ``act [..., act_dim]``."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(
        self, obs: np.ndarray, act: np.ndarray | None = None, batch_size: int = 65536
    ) -> np.ndarray:
        """Rewards ``[...]`` (float32 numpy) of numpy ``obs [..., *obs_shape]``,
        ``act [..., act_dim]``.

        Runs without gradients in chunks of ``batch_size`` steps (at most
        :attr:`max_batch_steps`), in eval mode; each chunk is converted on its own, so image
        observations are never turned into one float array.
        """
        was_training = self.training
        self.eval()
        obs = np.asarray(obs)
        nd = len(self.obs_shape)
        if obs.ndim < nd or tuple(obs.shape[obs.ndim - nd :]) != self.obs_shape:
            want = ", ".join(map(str, self.obs_shape))
            raise ValueError(f"obs: expected shape [..., {want}], found {tuple(obs.shape)}")
        lead = obs.shape[: obs.ndim - nd]
        flat = obs.reshape(-1, *self.obs_shape)
        act_flat = None
        if act is not None and self.act_dim:
            act = np.asarray(act)
            if act.shape != tuple(lead) + (self.act_dim,):
                raise ValueError(
                    f"act: expected shape {tuple(lead) + (self.act_dim,)} (obs's leading dims), "
                    f"found {act.shape}"
                )
            act_flat = act.reshape(-1, self.act_dim)
        elif self.act_dim:
            raise ValueError(f"act: expected shape [..., {self.act_dim}], found None")
        if self.max_batch_steps is not None:
            batch_size = min(batch_size, self.max_batch_steps)
        out = []
        for i in range(0, len(flat), batch_size):
            o = self.obs_tensor(flat[i : i + batch_size]).to(self.device)
            a = None
            if act_flat is not None:
                a = torch.as_tensor(act_flat[i : i + batch_size], dtype=torch.float32)
                a = a.to(self.device)
            out.append(self(o, a).float().cpu())
        self.train(was_training)
        result = torch.cat(out) if out else torch.zeros(0)
        return result.reshape(lead).numpy()

    def segment_scores(
        self, obs: torch.Tensor, act: torch.Tensor | None, step_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Segment returns ``[B, K]`` of ``obs [B, K, H, obs_dim]`` under the mean reward."""
        return losses.segment_return_scores(self(obs, act), step_mask)

    def training_terms(
        self,
        obs: torch.Tensor,
        act: torch.Tensor | None,
        step_mask: torch.Tensor | None,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores the preference loss sees, ``[S, B, K]``, and a scalar regulariser.

        S is 1 for a plain model, the number of members for an ensemble (each member gets its own
        loss) and ``num_samples`` for a Gaussian reward (reparameterised samples).
        """
        return self.segment_scores(obs, act, step_mask).unsqueeze(0), obs.new_zeros(())


class MLPReward(RewardModel):
    """r(o, a) = out(MLP([o, a])), with ``output="tanh"`` bounding rewards to [-1, 1] (PEBBLE)
    or ``None`` for an unbounded linear output.

    Args:
        obs_dim, act_dim: input sizes (``act_dim = 0``: state-only reward).
        hidden: hidden layer widths; ``()`` gives a linear reward.
        activation: one of :data:`ACTIVATIONS`.
        output: ``"tanh"`` or ``None``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "leaky_relu",
        output: str | None = "tanh",
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output: expected 'tanh' or None, found {output!r}")
        super().__init__(
            obs_dim, act_dim, hidden=[int(h) for h in hidden], activation=activation, output=output
        )
        self.net = mlp(obs_dim + act_dim, hidden, 1, activation)
        self.output = output

    def forward(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        r = self.net(self.inputs(obs, act)).squeeze(-1)
        return torch.tanh(r) if self.output == "tanh" else r


class EnsembleReward(RewardModel):
    """M independently initialised :class:`MLPReward` members; the reward is their mean.

    Each member is trained on its own copy of the preference loss (the trainer averages the M
    losses; the members share no parameters, so each gets its own gradient). Their disagreement
    on a query is the standard deviation across members of the predicted preference
    probabilities (PEBBLE's disagreement-based query selection).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_members: int = 3,
        hidden: Sequence[int] = (256, 256),
        activation: str = "leaky_relu",
        output: str | None = "tanh",
    ) -> None:
        if n_members < 1:
            raise ValueError(f"n_members: expected >= 1, found {n_members}")
        super().__init__(
            obs_dim, act_dim, n_members=int(n_members), hidden=[int(h) for h in hidden],
            activation=activation, output=output,
        )  # fmt: skip
        self.members = nn.ModuleList(
            MLPReward(obs_dim, act_dim, hidden, activation, output) for _ in range(n_members)
        )

    @property
    def n_members(self) -> int:
        return len(self.members)

    def member_rewards(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards of every member, ``[M, ...]``."""
        return torch.stack([m(obs, act) for m in self.members])

    def forward(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        return self.member_rewards(obs, act).mean(0)

    def training_terms(self, obs, act, step_mask, num_samples=1, generator=None):
        r = self.member_rewards(obs, act)  # [M, B, K, H]
        M, B, K, H = r.shape
        m = (
            None
            if step_mask is None
            else step_mask.unsqueeze(0).expand(M, B, K, H).reshape(M * B, K, H)
        )
        scores = losses.segment_return_scores(r.reshape(M * B, K, H), m).reshape(M, B, K)
        return scores, obs.new_zeros(())

    @torch.no_grad()
    def member_probabilities(self, obs, act, step_mask, item_mask) -> torch.Tensor:
        """``[M, B, K]`` each member's softmax (Plackett-Luce top-1 / Bradley-Terry for K = 2)
        probability that item k is the preferred one; zero on padding items."""
        r = self.member_rewards(obs, act)
        M, B, K, H = r.shape
        m = (
            None
            if step_mask is None
            else step_mask.unsqueeze(0).expand(M, B, K, H).reshape(M * B, K, H)
        )
        s = losses.segment_return_scores(r.reshape(M * B, K, H), m).reshape(M, B, K)
        s = s.masked_fill(~item_mask.unsqueeze(0), float("-inf"))
        return torch.softmax(s, dim=-1)

    @torch.no_grad()
    def disagreement(self, dataset, queries, batch_size: int = 1024) -> np.ndarray:
        """``[Q]`` disagreement of the members on each query.

        For a pair it is the standard deviation across members of P(item 0 preferred) =
        sigmoid(s_0 - s_1). For K items it is the mean over valid items of the standard deviation
        of each item's softmax (top-1) probability, which equals the pair value for K = 2.
        Population standard deviation (``unbiased=False``).
        """
        from robopref.rewards.segments import gather_segments, query_batch

        seg = gather_segments(
            dataset, queries, self.obs_dim, self.act_dim, obs_shape=self.obs_shape
        )
        was_training = self.training
        self.eval()
        out = []
        batch_size = query_batch(self, seg, batch_size)
        for i in range(0, len(seg), batch_size):
            b = seg[i : i + batch_size].to(self.device)
            p = self.member_probabilities(b.obs, b.act, b.step_mask, b.item_mask)  # [M, B, K]
            std = p.std(dim=0, unbiased=False)  # [B, K]
            w = b.item_mask.to(std.dtype)
            out.append(((std * w).sum(-1) / w.sum(-1)).cpu())
        self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0)


class GaussianReward(RewardModel):
    """PEARL's robust reward: a shared trunk with a mean head and a log-variance head per step.

    ``forward`` returns the mean reward (used to relabel data and to evaluate). During training
    the preference loss is applied to segment returns of reparameterised samples
    ``r = mu + sigma * eps``, ``eps ~ N(0, 1)`` per step, and the regulariser

        reg_weight * mean over valid steps of KL(N(mu, sigma^2) || N(mu, prior_std^2))
        = reg_weight * mean 0.5 * (log prior_std^2 - logvar + exp(logvar) / prior_std^2 - 1)

    pulls each step's variance towards the preset ``prior_std^2`` (see
    :func:`gaussian_kl_regulariser`). The log-variance is softly bounded to
    ``[min_logvar, max_logvar]`` (PETS-style softplus bounds) and its head is initialised at
    ``log prior_std^2``.

    Args:
        prior_std: preset standard deviation sigma0 of the per-step reward (reward units).
        reg_weight: weight of the KL regulariser (added to the preference loss).
        output: squashing of the mean head (``"tanh"`` or ``None``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "leaky_relu",
        output: str | None = "tanh",
        prior_std: float = 0.1,
        reg_weight: float = 1.0,
        min_logvar: float = -10.0,
        max_logvar: float = 2.0,
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output: expected 'tanh' or None, found {output!r}")
        if prior_std <= 0:
            raise ValueError(f"prior_std: expected > 0, found {prior_std}")
        if not min_logvar < 2 * math.log(prior_std) < max_logvar:
            raise ValueError(
                f"prior_std: expected log(prior_std^2) inside (min_logvar, max_logvar) = "
                f"({min_logvar}, {max_logvar}), found {2 * math.log(prior_std):.3f}"
            )
        super().__init__(
            obs_dim, act_dim, hidden=[int(h) for h in hidden], activation=activation, output=output,
            prior_std=float(prior_std), reg_weight=float(reg_weight), min_logvar=float(min_logvar),
            max_logvar=float(max_logvar),
        )  # fmt: skip
        hidden = list(hidden)
        self.trunk = (
            mlp(obs_dim + act_dim, hidden[:-1], hidden[-1], activation) if hidden else nn.Identity()
        )
        self.trunk_act = ACTIVATIONS[activation]() if hidden else nn.Identity()
        width = hidden[-1] if hidden else obs_dim + act_dim
        self.mean_head = nn.Linear(width, 1)
        self.logvar_head = nn.Linear(width, 1)
        nn.init.zeros_(self.logvar_head.weight)
        nn.init.constant_(
            self.logvar_head.bias,
            self._inverse_bounds(2 * math.log(prior_std), min_logvar, max_logvar),
        )
        self.output = output
        self.prior_std = float(prior_std)
        self.reg_weight = float(reg_weight)
        self.min_logvar = float(min_logvar)
        self.max_logvar = float(max_logvar)

    @staticmethod
    def _bounds(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        x = hi - nn.functional.softplus(hi - x)
        return lo + nn.functional.softplus(x - lo)

    @staticmethod
    def _inverse_bounds(y: float, lo: float, hi: float) -> float:
        # Solve _bounds(x) = y: y = lo + sp(z - lo), z = hi - sp(hi - x); sp^-1(v) = log(expm1(v)).
        z = lo + math.log(math.expm1(y - lo))
        return hi - math.log(math.expm1(hi - z))

    def mean_logvar(
        self, obs: torch.Tensor, act: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[...]`` and bounded log-variance ``[...]`` of the per-step reward."""
        h = self.trunk_act(self.trunk(self.inputs(obs, act)))
        mu = self.mean_head(h).squeeze(-1)
        mu = torch.tanh(mu) if self.output == "tanh" else mu
        logvar = self._bounds(self.logvar_head(h).squeeze(-1), self.min_logvar, self.max_logvar)
        return mu, logvar

    def forward(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        return self.mean_logvar(obs, act)[0]

    def std(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        """Per-step standard deviation ``[...]`` (an uncertainty estimate)."""
        return torch.exp(0.5 * self.mean_logvar(obs, act)[1])

    def sample(
        self,
        obs: torch.Tensor,
        act: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """Reparameterised reward sample ``mu + sigma * eps``: ``[...]``, or ``[S, ...]`` when
        ``num_samples = S`` is given. Differentiable in the parameters."""
        mu, logvar = self.mean_logvar(obs, act)
        return self._sample(mu, logvar, generator, num_samples)

    @staticmethod
    def _sample(mu, logvar, generator, num_samples):
        shape = mu.shape if num_samples is None else (num_samples, *mu.shape)
        eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def regulariser(
        self, logvar: torch.Tensor, step_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``reg_weight * gaussian_kl_regulariser(logvar, prior_std, step_mask)``."""
        return self.reg_weight * gaussian_kl_regulariser(logvar, self.prior_std, step_mask)

    def training_terms(self, obs, act, step_mask, num_samples=1, generator=None):
        mu, logvar = self.mean_logvar(obs, act)  # [B, K, H]
        r = self._sample(mu, logvar, generator, num_samples)  # [S, B, K, H]
        S, B, K, H = r.shape
        m = (
            None
            if step_mask is None
            else step_mask.unsqueeze(0).expand(S, B, K, H).reshape(S * B, K, H)
        )
        scores = losses.segment_return_scores(r.reshape(S * B, K, H), m).reshape(S, B, K)
        return scores, self.regulariser(logvar, step_mask)


REWARD_MODELS: dict[str, type[RewardModel]] = {
    "MLPReward": MLPReward,
    "EnsembleReward": EnsembleReward,
    "GaussianReward": GaussianReward,
}


def register_reward_model(cls: type[RewardModel]) -> type[RewardModel]:
    """Class decorator: make ``cls`` loadable by :func:`load_reward` (by class name)."""
    REWARD_MODELS[cls.__name__] = cls
    return cls


def model_checkpoint(model: RewardModel) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds ``model``: class name, arguments, weights (CPU)."""
    name = type(model).__name__
    if name not in REWARD_MODELS:
        raise ValueError(f"model: {name} is not registered (use register_reward_model)")
    return {
        "format": CHECKPOINT_FORMAT,
        "model_class": name,
        "model_kwargs": dict(model.init_kwargs),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> RewardModel:
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint: field 'format': expected {CHECKPOINT_FORMAT!r}, found {ckpt.get('format')!r}"
        )
    name = ckpt["model_class"]
    if name not in REWARD_MODELS:
        raise ValueError(
            f"checkpoint: field 'model_class': expected one of {sorted(REWARD_MODELS)}, found {name!r}"
        )
    model = REWARD_MODELS[name](**ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model_state"])
    return model.to(device)


def save_reward(model: RewardModel, path: str | os.PathLike) -> None:
    """Write ``model`` (class, arguments, weights) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(model_checkpoint(model), tmp)


def load_reward(path: str | os.PathLike, device: str | torch.device = "cpu") -> RewardModel:
    """Rebuild the reward model saved by :func:`save_reward` or ``RewardTrainer.save``."""
    from robopref.utils import resolve_device

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return model_from_checkpoint(ckpt, resolve_device(str(device)))
