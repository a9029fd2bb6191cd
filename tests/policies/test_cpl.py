"""CPL: the loss against a hand computation and the reference formula, and a small fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robopref.data import PreferenceQueries, Trajectory, TrajectoryDataset
from robopref.policies.offline import CPL, CPLConfig, PolicyConfig, TransitionBuffer, cpl_loss
from robopref.policies.offline.cpl import cpl_scores
from robopref.rewards.segments import gather_segments


def reference_biased_bce(adv1, adv2, y, bias):
    """The reference code's formula, written out: y = 1 when segment 2 is preferred."""
    logit21 = adv2 - bias * adv1
    logit12 = adv1 - bias * adv2
    nlp21 = torch.log1p(torch.exp(-logit21))
    nlp12 = torch.log1p(torch.exp(-logit12))
    return (y * nlp21 + (1 - y) * nlp12).mean()


def reference_biased_scores(adv, score, bias):
    """Reference listwise form: every ordered pair (higher score over lower), mean over pairs."""
    total, n = 0.0, 0
    for i in range(len(adv)):
        for j in range(len(adv)):
            if score[i] > score[j]:
                total += math.log1p(math.exp(-(adv[i] - bias * adv[j])))
                n += 1
    return total / n


def test_loss_equals_hand_computation():
    # S+ = 1, S- = 2, lambda = 0.5: -log(e^1 / (e^1 + e^(0.5 * 2))) = log 2
    scores = torch.tensor([[1.0, 2.0]])
    labels = torch.tensor([[1.0, 0.0]])
    assert cpl_loss(scores, labels, bias=0.5).item() == pytest.approx(math.log(2.0), abs=1e-6)
    # S+ = 0.3, S- = -1, lambda = 0.5: softplus(0.5 * -1 - 0.3) = log(1 + e^-0.8)
    scores = torch.tensor([[-1.0, 0.3]])
    labels = torch.tensor([[0.0, 1.0]])
    want = math.log(1 + math.exp(-0.8))
    assert cpl_loss(scores, labels, bias=0.5).item() == pytest.approx(want, abs=1e-6)
    # the bias changes the value: lambda = 1 is the plain Bradley-Terry loss log(1 + e^-1.3)
    plain = math.log(1 + math.exp(-1.3))
    assert cpl_loss(scores, labels, bias=1.0).item() == pytest.approx(plain, abs=1e-6)


def test_loss_equals_reference_formula_pairs_and_soft():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(32, 2, generator=g) * 3
    y = (torch.rand(32, generator=g) > 0.5).float()
    labels = torch.stack([1 - y, y], dim=1)  # graded: item 1 preferred when y = 1
    for bias in (0.5, 0.8, 1.0):
        ours = cpl_loss(adv, labels, bias=bias)
        ref = reference_biased_bce(adv[:, 0], adv[:, 1], y, bias)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    # soft labels: P(item 0 preferred) = 1 - y_soft
    y_soft = torch.rand(32, generator=g)
    soft = torch.stack([1 - y_soft, y_soft], dim=1)
    ours = cpl_loss(adv, soft, bias=0.5, soft=True)
    ref = reference_biased_bce(adv[:, 0], adv[:, 1], y_soft, 0.5)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_listwise_equals_reference_scores_form():
    adv = [0.4, -1.2, 2.0, 0.1]
    score = [3.0, 1.0, 2.0, 0.0]
    ours = cpl_loss(torch.tensor([adv]), torch.tensor([score]), bias=0.5)
    assert ours.item() == pytest.approx(reference_biased_scores(adv, score, 0.5), rel=1e-6)


def _toy(n_traj=40, T=10, seed=0):
    """1-D actions; the teacher prefers segments whose actions are near +0.5."""
    rng = np.random.default_rng(seed)
    trajs = []
    for i in range(n_traj):
        target = 0.5 if i % 2 == 0 else -0.5
        act = np.clip(target + 0.1 * rng.standard_normal((T, 1)), -1, 1)
        obs = rng.standard_normal((T, 3))
        trajs.append(Trajectory(obs, act, rewards=-np.abs(act[:, 0] - 0.5)))
    ti = np.stack([rng.permutation(n_traj)[:2] for _ in range(200)])
    returns = np.array([t.rewards.sum() for t in trajs])
    labels = (returns[ti] >= returns[ti][:, ::-1]).astype(float)
    q = PreferenceQueries(ti, np.zeros_like(ti), T, labels=labels, label_kind="graded")
    return TrajectoryDataset(trajs, q)


def test_learner_loss_is_the_formula_on_policy_log_probs():
    data = _toy()
    seg = gather_segments(data, data.queries)
    agent = CPL(3, 1, CPLConfig(device="cpu", alpha=0.1, bias=0.5))
    with torch.no_grad():
        ours = agent.preference_loss(seg[:8]).item()
        mean, std = agent.actor(seg.obs[:8])
        lp = torch.distributions.Normal(mean, std).log_prob(seg.act[:8]).sum(-1)  # [8, 2, H]
        adv = 0.1 * lp.sum(-1)
        y = seg.labels[:8, 1]
        ref = reference_biased_bce(adv[:, 0], adv[:, 1], y, 0.5).item()
    assert ours == pytest.approx(ref, rel=1e-5)
    # discounting weights step t by gamma^t
    lp = torch.ones(1, 2, 3)
    got = cpl_scores(lp, torch.ones(1, 2, 3, dtype=torch.bool), alpha=0.5, discount=0.5)
    assert got.tolist() == [[0.875, 0.875]]


def test_cpl_learns_the_preferred_action():
    data = _toy()
    config = CPLConfig(device="cpu", steps=600, bc_fraction=0.3, lr=1e-3, hidden=(32, 32))
    agent = CPL(3, 1, config)
    agent.set_preferences(gather_segments(data, data.queries))
    agent.train(TransitionBuffer.from_dataset(data), progress=False)
    acts = agent.act(np.random.default_rng(1).standard_normal((64, 3)))
    # BC alone fits the mixture (mean near 0); the preferences move it towards +0.5
    assert acts.mean() > 0.25


def test_policy_config_knows_cpl():
    assert PolicyConfig(name="cpl").options().bias == 0.5
    with pytest.raises(ValueError, match="unknown learner 'cpll'"):
        PolicyConfig(name="cpll")
