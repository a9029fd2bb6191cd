"""Active query selection: exact picks on a hand-made ensemble, and teacher labels on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robopref.data import (
    DataValidationError,
    PreferenceQueries,
    Trajectory,
    TrajectoryDataset,
    sample_queries,
)
from robopref.rewards import EnsembleReward
from robopref.rewards.active import member_probabilities, query_scores, select_queries
from robopref.teachers import make_teacher


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _linear_ensemble(weights: list[list[float]]) -> EnsembleReward:
    """Members r_m(s) = w_m . s (no hidden layer, no bias, no squashing)."""
    obs_dim = len(weights[0])
    model = EnsembleReward(obs_dim, 0, n_members=len(weights), hidden=(), output=None)
    with torch.no_grad():
        for member, w in zip(model.members, weights):
            member.net[0].weight.copy_(torch.tensor([w], dtype=torch.float32))
            member.net[0].bias.zero_()
    return model


def _constant_dataset(values: list[float], T: int = 3) -> TrajectoryDataset:
    return TrajectoryDataset(
        [
            Trajectory(np.full((T, 1), v, dtype=np.float32), np.zeros((T, 1)), np.zeros(T))
            for v in values
        ]
    )


# values of the 5 trajectories and the candidate pairs (one-step segments)
VALUES = [0.0, 0.5, 1.0, 3.0, -2.0]
PAIRS = [(0, 1), (2, 0), (3, 4), (1, 2), (3, 0)]  # d = s_a - s_b: -0.5, 1, 5, -0.5, 3


@pytest.fixture
def setup():
    ds = _constant_dataset(VALUES)
    cand = PreferenceQueries(np.array(PAIRS), np.zeros((5, 2), dtype=np.int64), 1)
    # member 0: r = s; member 1: r = 0 -> P_0 = sigmoid(d), P_1 = 1/2
    return ds, cand, _linear_ensemble([[1.0], [0.0]])


def test_disagreement_picks_largest_member_spread(setup):
    ds, cand, model = setup
    out = select_queries(ds, cand, 3, "disagreement", model=model)
    # std of {sigmoid(d), 1/2} = |sigmoid(d) - 1/2| / 2: largest for |d| = 5, 3, 1
    assert out.metadata["selection"]["candidate_index"] == [2, 4, 1]
    np.testing.assert_array_equal(out.traj_index, np.array([PAIRS[2], PAIRS[4], PAIRS[1]]))
    expected = [abs(_sigmoid(d) - 0.5) / 2 for d in (5.0, 3.0, 1.0)]
    np.testing.assert_allclose(out.metadata["selection"]["scores"], expected, rtol=1e-6)
    # the same numbers as the ensemble's own disagreement
    np.testing.assert_allclose(
        query_scores(member_probabilities(model, ds, cand), "disagreement"),
        model.disagreement(ds, cand),
        rtol=1e-6,
    )


def test_entropy_picks_most_uncertain_mean_prediction(setup):
    ds, cand, model = setup
    out = select_queries(ds, cand, 2, "entropy", model=model)
    # p_bar = (sigmoid(d) + 1/2) / 2 is closest to 1/2 for |d| = 0.5 (candidates 0 and 3, a
    # tie kept in candidate order)
    assert out.metadata["selection"]["candidate_index"] == [0, 3]
    p = (_sigmoid(-0.5) + 0.5) / 2
    h = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    np.testing.assert_allclose(out.metadata["selection"]["scores"], [h, h], rtol=1e-6)


def test_scores_for_lists_with_padding_by_hand():
    # M = 2 members, Q = 2 queries of K = 3 items; query 1 has a padding item.
    p = np.array(
        [
            [[0.6, 0.3, 0.1], [0.5, 0.5, 0.0]],
            [[0.2, 0.3, 0.5], [0.9, 0.1, 0.0]],
        ]
    )
    mask = np.array([[True, True, True], [True, True, False]])
    dis = query_scores(p, "disagreement", mask)
    # per-item std of two values = |a - b| / 2
    np.testing.assert_allclose(dis, [(0.2 + 0.0 + 0.2) / 3, (0.2 + 0.2) / 2])
    ent = query_scores(p, "entropy", mask)
    pbar0, pbar1 = np.array([0.4, 0.3, 0.3]), np.array([0.7, 0.3])
    np.testing.assert_allclose(
        ent, [-(pbar0 * np.log(pbar0)).sum(), -(pbar1 * np.log(pbar1)).sum()]
    )
    ds = _constant_dataset([0.0, 1.0, 2.0])
    cand = PreferenceQueries(
        np.array([[0, 1, 2], [0, 1, 0]]), np.zeros((2, 3), np.int64), 1, mask=mask
    )
    assert select_queries(ds, cand, 1, "entropy", model=p).metadata["selection"][
        "candidate_index"
    ] == [0]
    assert select_queries(ds, cand, 1, "disagreement", model=p).metadata["selection"][
        "candidate_index"
    ] == [1]


def test_uniform_and_errors(setup):
    ds, cand, model = setup
    a = select_queries(ds, cand, 3, "uniform", rng=np.random.default_rng(0))
    b = select_queries(ds, cand, 3, "uniform", rng=np.random.default_rng(0))
    idx = a.metadata["selection"]["candidate_index"]
    assert idx == b.metadata["selection"]["candidate_index"] and len(set(idx)) == 3
    with pytest.raises(DataValidationError, match=r"field 'num': expected 0 <= num <= 5"):
        select_queries(ds, cand, 6, "uniform")
    with pytest.raises(DataValidationError, match=r"field 'model': expected .* found None"):
        select_queries(ds, cand, 1, "entropy")
    with pytest.raises(DataValidationError, match=r"expected an ensemble \(>= 2 members\)"):
        select_queries(ds, cand, 1, "disagreement", model=_linear_ensemble([[1.0]]).members[0])
    with pytest.raises(DataValidationError, match=r"field 'strategy'"):
        select_queries(ds, cand, 1, "margin", model=model)


def test_disagreement_sampling_then_teacher_labels_the_disputed_queries():
    """Members r_0 = s_0 + s_1 and r_1 = s_0 - s_1 agree exactly on trajectories with s_1 = 0
    (0-5) and disagree on pairs with different s_1 (6-11: s_1 = 0.3, ..., 1.8); the selected queries all involve the latter, and
    the oracle teacher labels them by the true reward s_0."""
    rng = np.random.default_rng(0)
    trajs = []
    for i in range(12):
        s = np.zeros((10, 2), dtype=np.float32)
        s[:, 0] = rng.normal(size=10)
        s[:, 1] = 0.0 if i < 6 else 0.3 * (i - 5)
        trajs.append(Trajectory(s, np.zeros((10, 1)), s[:, 0].astype(np.float64)))
    ds = TrajectoryDataset(trajs)
    model = _linear_ensemble([[1.0, 1.0], [1.0, -1.0]])
    cand = sample_queries(ds, 60, k=2, segment_length=5, rng=np.random.default_rng(1))
    dis = query_scores(member_probabilities(model, ds, cand), "disagreement")
    agree = (cand.traj_index < 6).all(1)
    assert agree.sum() >= 5 and (dis[agree] == 0).all() and (dis[~agree] > 1e-3).all()
    asked = select_queries(ds, cand, 10, "disagreement", model=model)
    assert (asked.traj_index >= 6).any(1).all()
    labelled = make_teacher("oracle").label(ds, asked)
    assert labelled.num_queries == 10 and labelled.label_kind == "graded"
    returns = np.array(
        [
            [ds[int(t)].rewards[s : s + 5].sum() for t, s in zip(ti, st)]
            for ti, st in zip(asked.traj_index, asked.start)
        ]
    )
    np.testing.assert_array_equal(labelled.preferred_index(), returns.argmax(1))
    uniform = select_queries(ds, cand, 10, "uniform", rng=np.random.default_rng(2))
    chosen = uniform.metadata["selection"]["candidate_index"]
    assert dis[chosen].mean() < np.mean(asked.metadata["selection"]["scores"])
