"""Reward models: shapes, input checks, the Gaussian regulariser, disagreement, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rewards_synthetic import (
    ACT_DIM,
    OBS_DIM,
    TEST_IDS,
    W,
    linear_reward,
    make_dataset,
    make_queries,
)

from robopref.data import DataValidationError, PreferenceQueries
from robopref.rewards import (
    EnsembleReward,
    GaussianReward,
    MLPReward,
    RewardTrainer,
    RewardTrainerConfig,
    gather_segments,
    gaussian_kl_regulariser,
    load_reward,
    save_reward,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models train fastest on one thread (and the test machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FACTORIES = {
    "mlp": lambda: MLPReward(OBS_DIM, ACT_DIM, hidden=(16, 16)),
    "ensemble": lambda: EnsembleReward(OBS_DIM, ACT_DIM, n_members=3, hidden=(16,)),
    "gaussian": lambda: GaussianReward(OBS_DIM, ACT_DIM, hidden=(16, 16)),
}


@pytest.fixture(params=list(FACTORIES))
def model(request):
    torch.manual_seed(0)
    return FACTORIES[request.param]()


def test_forward_and_predict_shapes(model):
    obs, act = torch.randn(5, 3, 7, OBS_DIM), torch.randn(5, 3, 7, ACT_DIM)
    r = model(obs, act)
    assert r.shape == (5, 3, 7)
    pred = model.predict(obs.numpy(), act.numpy(), batch_size=16)  # several chunks
    assert pred.shape == (5, 3, 7) and pred.dtype == np.float32
    np.testing.assert_allclose(pred, r.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(pred) <= 1.0)  # tanh output


def test_input_shape_errors_name_the_field():
    model = MLPReward(OBS_DIM, ACT_DIM, hidden=(8,))
    with pytest.raises(ValueError, match=r"obs: expected shape \[\.\.\., 4\], found \(3, 5\)"):
        model(torch.randn(3, 5), torch.randn(3, ACT_DIM))
    with pytest.raises(ValueError, match=r"act: expected shape \(3, 2\).*found \(3, 3\)"):
        model(torch.randn(3, OBS_DIM), torch.randn(3, 3))
    with pytest.raises(ValueError, match="act: .*found None"):
        model(torch.randn(3, OBS_DIM))
    with pytest.raises(ValueError, match="activation"):
        MLPReward(OBS_DIM, ACT_DIM, activation="swish")
    with pytest.raises(ValueError, match="output"):
        MLPReward(OBS_DIM, ACT_DIM, output="sigmoid")


def test_state_only_linear_reward_is_exact():
    model = MLPReward(OBS_DIM, 0, hidden=(), output=None)
    with torch.no_grad():
        model.net[0].weight.copy_(torch.tensor(W, dtype=torch.float32)[None])
        model.net[0].bias.zero_()
    obs = np.random.default_rng(0).normal(size=(6, OBS_DIM))
    np.testing.assert_allclose(model.predict(obs), obs @ W, rtol=1e-5, atol=1e-6)


def test_gaussian_regulariser_hand_computed():
    # sigma0 = 0.5: KL(N(mu, s^2) || N(mu, 0.25)) = 0.5 * (log 0.25 - log s^2 + s^2 / 0.25 - 1)
    logvar = torch.tensor([math.log(0.25), 0.0, math.log(0.01)])
    kl = [
        0.0,
        0.5 * (math.log(0.25) + 4.0 - 1.0),
        0.5 * (math.log(0.25) - math.log(0.01) + 0.04 - 1.0),
    ]
    assert kl[1] == pytest.approx(0.8068528194)
    assert kl[2] == pytest.approx(1.1294379124)
    assert float(gaussian_kl_regulariser(logvar, 0.5)) == pytest.approx(sum(kl) / 3, rel=1e-6)
    mask = torch.tensor([True, False, True])
    assert float(gaussian_kl_regulariser(logvar, 0.5, mask)) == pytest.approx(
        (kl[0] + kl[2]) / 2, rel=1e-6
    )
    # the model's regulariser is the weighted version, and the mean head does not enter
    model = GaussianReward(OBS_DIM, ACT_DIM, hidden=(8,), prior_std=0.5, reg_weight=3.0)
    assert float(model.regulariser(logvar, mask)) == pytest.approx(
        3.0 * (kl[0] + kl[2]) / 2, rel=1e-6
    )


def test_gaussian_starts_at_prior_and_samples_reparameterised():
    torch.manual_seed(0)
    model = GaussianReward(OBS_DIM, ACT_DIM, hidden=(16, 16), prior_std=0.2)
    obs, act = torch.randn(50, OBS_DIM), torch.randn(50, ACT_DIM)
    mu, logvar = model.mean_logvar(obs, act)
    torch.testing.assert_close(torch.exp(logvar), torch.full((50,), 0.04), rtol=1e-5, atol=1e-7)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s = model.sample(obs, act, g1, num_samples=4000)
    assert s.shape == (4000, 50)
    torch.testing.assert_close(s, model.sample(obs, act, g2, num_samples=4000))  # seeded
    torch.testing.assert_close(s.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(s.std(0), torch.full((50,), 0.2), atol=0.015, rtol=0)
    s.sum().backward()  # differentiable through mu and sigma
    assert model.mean_head.weight.grad is not None and model.logvar_head.weight.grad is not None


def test_ensemble_disagreement_matches_member_probabilities():
    ds = make_dataset(linear_reward, n=30)
    q = make_queries(ds, 20, 2, np.arange(30), seed=5)
    torch.manual_seed(1)
    model = EnsembleReward(OBS_DIM, ACT_DIM, n_members=4, hidden=(16,))
    d = model.disagreement(ds, q, batch_size=7)
    seg = gather_segments(ds, q)
    with torch.no_grad():
        r = model.member_rewards(seg.obs, seg.act) * seg.step_mask  # [M, Q, K, H]
        s = r.sum(-1)
        p0 = torch.sigmoid(s[..., 0] - s[..., 1])  # [M, Q]
    np.testing.assert_allclose(d, p0.std(0, unbiased=False).numpy(), rtol=1e-4, atol=1e-6)
    assert d.shape == (20,) and np.all(d > 0)
    # K = 4 lists with a padding item: the mean over the 3 valid items of the std of softmax probs
    q4 = make_queries(ds, 5, 4, np.arange(30), seed=6)
    mask = np.ones((5, 4), bool)
    mask[0, 3] = False
    q4 = PreferenceQueries(q4.traj_index, q4.start, q4.length, q4.labels, mask, label_kind="graded")
    d4 = model.disagreement(ds, q4)
    seg4 = gather_segments(ds, q4)
    with torch.no_grad():
        s4 = (model.member_rewards(seg4.obs, seg4.act) * seg4.step_mask).sum(-1)[:, 0, :3]
        expected = torch.softmax(s4, -1).std(0, unbiased=False).mean()
    assert d4[0] == pytest.approx(float(expected), rel=1e-4)


def test_gather_segments_ragged_lengths_and_padding():
    ds = make_dataset(linear_reward, n=6)
    ti = np.array([[0, 1, 2], [3, 4, 5]])
    start = np.array([[0, 5, 30], [2, 0, 0]])
    length = np.array([[10, 4, 10], [1, 7, 3]])
    mask = np.array([[True, True, True], [True, True, False]])
    q = PreferenceQueries(ti, start, length, np.zeros((2, 3)), mask, label_kind="graded")
    seg = gather_segments(ds, q, OBS_DIM, ACT_DIM)
    assert seg.obs.shape == (2, 3, 10, OBS_DIM) and seg.act.shape == (2, 3, 10, ACT_DIM)
    for i in range(2):
        for k in range(3):
            h = length[i, k] if mask[i, k] else 0
            assert seg.step_mask[i, k].sum() == h
            t = ds[int(ti[i, k])]
            np.testing.assert_allclose(
                seg.obs[i, k, :h].numpy(), t.state[start[i, k] : start[i, k] + h], rtol=1e-6
            )
            np.testing.assert_allclose(
                seg.act[i, k, :h].numpy(), t.actions[start[i, k] : start[i, k] + h], rtol=1e-6
            )
            assert float(seg.obs[i, k, h:].abs().sum()) == 0.0
    with pytest.raises(DataValidationError, match="field 'state': expected obs_dim = 5"):
        gather_segments(ds, q, obs_dim=5)
    bad = PreferenceQueries(ti, np.full((2, 3), 35), 10, np.zeros((2, 3)), label_kind="graded")
    with pytest.raises(DataValidationError, match="start/length"):
        gather_segments(ds, bad)


def test_accuracy_of_ground_truth_reward_and_ties():
    ds = make_dataset(linear_reward)
    q = make_queries(ds, 200, 4, TEST_IDS, seed=3)
    model = MLPReward(OBS_DIM, 0, hidden=(), output=None)
    trainer = RewardTrainer(model, RewardTrainerConfig(quiet=True))
    with torch.no_grad():
        model.net[0].weight.copy_(torch.tensor(W, dtype=torch.float32)[None])
        model.net[0].bias.zero_()
    assert trainer.accuracy(ds, q) == 1.0
    with torch.no_grad():
        model.net[0].weight.neg_()
    assert trainer.accuracy(ds, q) == 0.0  # the worst item is now ranked top
    # tied queries are not counted: tie the top two items of the first 150 queries
    labels = q.labels.copy()
    labels[:150] = np.where(labels[:150] == 2, 3.0, labels[:150])
    tied = PreferenceQueries(q.traj_index, q.start, q.length, labels, label_kind="graded")
    assert trainer.accuracy(ds, tied) == 0.0
    all_tied = PreferenceQueries(
        q.traj_index, q.start, q.length, np.ones_like(labels), label_kind="graded"
    )
    assert math.isnan(trainer.accuracy(ds, all_tied))


def test_save_and_load_reward_round_trip(model, tmp_path):
    path = tmp_path / "sub" / "reward.pt"
    save_reward(model, path)
    loaded = load_reward(path)
    assert type(loaded) is type(model) and loaded.init_kwargs == model.init_kwargs
    obs, act = (
        np.random.default_rng(0).normal(size=(9, OBS_DIM)),
        np.random.default_rng(1).normal(size=(9, ACT_DIM)),
    )
    np.testing.assert_array_equal(loaded.predict(obs, act), model.predict(obs, act))
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == [
        "reward.pt"
    ]  # no temp files left
