"""Active query selection (B-Pref, Lee et al. 2021): which candidate queries to ask a teacher.

From a pool of unlabelled candidate queries, pick the ``num`` with the highest score:

* ``"uniform"``: a uniformly random subset (no model needed).
* ``"disagreement"``: the ensemble members' disagreement. For a pair it is the standard
  deviation across members of P_m(item 0 preferred) = sigmoid(s_m0 - s_m1); for K items it is
  the mean over the valid items of the standard deviation of each item's softmax (top-1,
  Plackett-Luce) probability, which equals the pair value for K = 2 (population std).
* ``"entropy"``: the entropy (nats) of the ensemble-mean preference distribution
  ``p_bar = mean_m softmax(s_m)`` over the valid items, ``-sum_k p_bar_k log p_bar_k``.
  (B-Pref's code averages the members' entropies instead; the entropy of the mean also
  counts the members' disagreement, and is the "predictive entropy" of the ensemble.)

    from robopref.rewards.active import select_queries
    pool = sample_queries(dataset, 10 * n, k=2, segment_length=25, rng=rng)
    asked = select_queries(dataset, pool, n, "disagreement", model=ensemble)
    labelled = make_teacher("oracle").label(dataset, asked)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from robopref.data import DataValidationError, PreferenceQueries, TrajectoryDataset

Strategy = Literal["uniform", "disagreement", "entropy"]
STRATEGIES = ("uniform", "disagreement", "entropy")


@torch.no_grad()
def member_probabilities(
    model: torch.nn.Module,
    dataset: TrajectoryDataset,
    queries: PreferenceQueries,
    batch_size: int = 1024,
) -> np.ndarray:
    """``[M, Q, K]`` each member's probability that item k is the preferred one of its query.

    ``model`` is an :class:`~robopref.rewards.EnsembleReward` (M members) or any reward model
    with ``segment_scores`` (M = 1). Probabilities are softmaxes of the segment returns over
    the valid items (Bradley-Terry for K = 2); padding items get 0.
    """
    from robopref.rewards.segments import gather_segments, query_batch

    shape = getattr(model, "obs_shape", None)
    seg = gather_segments(dataset, queries, model.obs_dim, model.act_dim, obs_shape=shape)
    was_training = model.training
    model.eval()
    out = []
    batch_size = query_batch(model, seg, batch_size)
    for i in range(0, len(seg), batch_size):
        b = seg[i : i + batch_size].to(model.device)
        if hasattr(model, "member_probabilities"):
            p = model.member_probabilities(b.obs, b.act, b.step_mask, b.item_mask)
        else:
            s = model.segment_scores(b.obs, b.act, b.step_mask)
            p = torch.softmax(s.masked_fill(~b.item_mask, float("-inf")), dim=-1)[None]
        out.append(p.float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((1, 0, queries.k))
    return torch.cat(out, dim=1).numpy().astype(np.float64)


def query_scores(
    probabilities: np.ndarray, strategy: Strategy, mask: np.ndarray | None = None
) -> np.ndarray:
    """``[Q]`` informativeness of each query from member probabilities ``[M, Q, K]``.

    Args:
        probabilities: ``[M, Q, K]``; each ``[q, :]`` row sums to 1 over the valid items.
        strategy: ``"disagreement"`` (mean over valid items of the std across members) or
            ``"entropy"`` (entropy of the member-mean distribution, nats).
        mask: ``[Q, K]`` bool, valid items (default: all).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 3:
        raise DataValidationError(
            f"query_scores: field 'probabilities': expected [M, Q, K], found shape {p.shape}"
        )
    M, Q, K = p.shape
    mask = np.ones((Q, K), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (Q, K):
        raise DataValidationError(
            f"query_scores: field 'mask': expected shape ({Q}, {K}), found {mask.shape}"
        )
    w = mask.astype(np.float64)
    if strategy == "disagreement":
        std = p.std(axis=0)  # [Q, K], population std
        return (std * w).sum(1) / np.maximum(w.sum(1), 1.0)
    if strategy == "entropy":
        pbar = p.mean(axis=0)
        logp = np.log(np.where(pbar > 0, pbar, 1.0))
        return -(pbar * logp * w).sum(1)
    raise DataValidationError(
        f"query_scores: field 'strategy': expected 'disagreement' or 'entropy', found {strategy!r}"
    )


def select_queries(
    dataset: TrajectoryDataset,
    candidates: PreferenceQueries,
    num: int,
    strategy: Strategy = "uniform",
    model: torch.nn.Module | np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> PreferenceQueries:
    """Pick ``num`` of the ``candidates`` to ask (B-Pref's uniform / disagreement / entropy).

    Args:
        dataset: the trajectories the candidates index.
        candidates: the pool (labels, if any, are kept on the selected queries).
        num: how many to select, ``0 <= num <= len(candidates)``.
        strategy: ``"uniform"``, ``"disagreement"`` or ``"entropy"`` (module docstring).
        model: for the two model-based strategies, a reward model (an
            :class:`~robopref.rewards.EnsembleReward` for disagreement) or precomputed member
            probabilities ``[M, Q, K]`` (see :func:`member_probabilities`).
        rng: randomness of ``"uniform"`` (default: a fresh generator).

    Returns:
        The selected queries, most informative first (uniform: in random order), with
        ``metadata["selection"] = {"strategy", "candidate_index" [num], "scores" [num]}``
        (``scores`` empty for uniform). Ties in score keep the candidates' order.
    """
    Q = candidates.num_queries
    if strategy not in STRATEGIES:
        raise DataValidationError(
            f"select_queries: field 'strategy': expected one of {STRATEGIES}, found {strategy!r}"
        )
    if not 0 <= num <= Q:
        raise DataValidationError(
            f"select_queries: field 'num': expected 0 <= num <= {Q} (the candidates), found {num}"
        )
    candidates.validate("select_queries: candidates", dataset)
    if strategy == "uniform":
        rng = rng if rng is not None else np.random.default_rng()
        idx = rng.choice(Q, size=num, replace=False)
        scores = np.zeros(0)
    else:
        if model is None:
            raise DataValidationError(
                f"select_queries: field 'model': expected a reward model (ensemble) or [M, Q, K] "
                f"member probabilities for strategy {strategy!r}, found None"
            )
        if isinstance(model, np.ndarray):
            probs = model
            if probs.ndim != 3 or probs.shape[1:] != (Q, candidates.k):
                raise DataValidationError(
                    f"select_queries: field 'model': expected member probabilities [M, {Q}, "
                    f"{candidates.k}], found shape {probs.shape}"
                )
        else:
            probs = member_probabilities(model, dataset, candidates)
        if strategy == "disagreement" and probs.shape[0] < 2:
            raise DataValidationError(
                "select_queries: field 'model': expected an ensemble (>= 2 members) for "
                f"disagreement, found {probs.shape[0]} member"
            )
        all_scores = query_scores(probs, strategy, candidates.mask)
        idx = np.argsort(-all_scores, kind="stable")[:num]
        scores = all_scores[idx]
    out = candidates.subset(idx)
    out.metadata = {
        **candidates.metadata,
        "selection": {
            "strategy": strategy,
            "candidate_index": [int(i) for i in idx],
            "scores": [float(s) for s in scores],
        },
    }
    return out


class ActiveSelector:
    """Picks the next queries by a reward ensemble trained on the answers so far (B-Pref /
    PEBBLE's query selection, one round at a time).

    ``pool`` holds the candidate queries (sampled once, e.g. 10 x the label budget); ``fit``
    trains a fresh :class:`~robopref.rewards.EnsembleReward` on the answered queries and scores
    every candidate; ``pick`` then returns the best-scored candidates not asked yet. Before the
    first ``fit`` (or with ``strategy="uniform"``) ``pick`` draws uniformly.

    Args:
        dataset: the trajectories the queries index (state observations).
        pool: the candidate queries.
        strategy: ``"uniform"``, ``"disagreement"`` or ``"entropy"``.
        n_members, hidden, epochs, lr: the ensemble and its training (small by default: it is
            retrained every few answers).
        seed: seeds the uniform draws and the ensemble's initialisation.
    """

    def __init__(
        self,
        dataset: TrajectoryDataset,
        pool: PreferenceQueries,
        strategy: Strategy = "disagreement",
        *,
        n_members: int = 3,
        hidden: tuple[int, ...] = (64, 64),
        epochs: int = 30,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise DataValidationError(f"select: expected one of {STRATEGIES}, found {strategy!r}")
        pool.validate("ActiveSelector: pool", dataset)
        self.dataset, self.pool, self.strategy = dataset, pool, strategy
        self.n_members, self.hidden, self.epochs, self.lr = n_members, hidden, epochs, lr
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.scores: np.ndarray | None = None
        self.fits = 0

    def fit(self, answered: PreferenceQueries) -> None:
        """Train the ensemble on ``answered`` (labelled queries) and score the pool."""
        if self.strategy == "uniform" or answered.num_queries < 2:
            return
        from robopref.rewards.models import EnsembleReward
        from robopref.rewards.trainer import RewardTrainer, RewardTrainerConfig

        torch.manual_seed(self.seed + self.fits)
        obs_dim = int(np.asarray(self.dataset[0].state).shape[1])
        model = EnsembleReward(
            obs_dim, self.dataset[0].actions.shape[1], self.n_members, self.hidden
        )
        config = RewardTrainerConfig(
            epochs=self.epochs, lr=self.lr, val_fraction=0.0, patience=None, quiet=True,
            device="cpu", seed=self.seed + self.fits, batch_size=64,
        )  # fmt: skip
        RewardTrainer(model, config).fit(self.dataset, answered)
        probs = member_probabilities(model, self.dataset, self.pool)
        self.scores = query_scores(probs, self.strategy, self.pool.mask)
        self.fits += 1

    def pick(self, num: int, asked: set[int] | None = None) -> np.ndarray:
        """Indices into the pool of ``num`` candidates not in ``asked``, most informative
        first (uniformly drawn before the first ``fit``)."""
        asked = asked or set()
        free = np.array([i for i in range(self.pool.num_queries) if i not in asked], np.int64)
        num = min(num, len(free))
        if self.scores is None:
            return self.rng.choice(free, size=num, replace=False)
        order = np.argsort(-self.scores[free], kind="stable")
        return free[order[:num]]


def active_labels(
    dataset: TrajectoryDataset,
    pool: PreferenceQueries,
    label: Callable[[PreferenceQueries], PreferenceQueries],
    budget: int,
    strategy: Strategy = "disagreement",
    retrain_every: int = 50,
    seed: int = 0,
    **selector_options: Any,
) -> PreferenceQueries:
    """Ask ``budget`` queries of ``pool`` through ``label`` (a teacher: unlabelled queries in,
    labelled queries out), ``retrain_every`` at a time: the first batch uniformly, each next one
    by ``strategy`` under an ensemble trained on every answer so far.

    Returns the labelled queries in the order asked, with ``metadata["selection"] =
    {"strategy", "retrain_every", "candidate_index"}``.
    """
    if not 1 <= budget <= pool.num_queries:
        raise DataValidationError(
            f"active_labels: budget: expected 1..{pool.num_queries} (the pool), found {budget}"
        )
    if retrain_every < 1:
        raise DataValidationError(
            f"active_labels: retrain_every: expected an integer >= 1, found {retrain_every}"
        )
    selector = ActiveSelector(dataset, pool, strategy, seed=seed, **selector_options)
    asked: list[int] = []
    labelled: PreferenceQueries | None = None
    while len(asked) < budget:
        idx = selector.pick(min(retrain_every, budget - len(asked)), set(asked))
        batch = label(pool.subset(idx))
        labelled = batch if labelled is None else _concat(labelled, batch)
        asked += [int(i) for i in idx]
        if len(asked) < budget:
            selector.fit(labelled)
    assert labelled is not None
    labelled.metadata = {
        **labelled.metadata,
        "selection": {
            "strategy": strategy,
            "retrain_every": retrain_every,
            "candidate_index": asked,
        },
    }
    return labelled


def _concat(a: PreferenceQueries, b: PreferenceQueries) -> PreferenceQueries:
    """``a``'s queries then ``b``'s (labels of the same kind; ``a``'s metadata)."""
    return PreferenceQueries(
        *(np.concatenate([getattr(a, f), getattr(b, f)]) for f in _FIELDS),
        a.label_kind,
        a.teacher,
        a.seed,
        dict(a.metadata),
    )


_FIELDS = ("traj_index", "start", "length", "labels", "mask", "confidence")
