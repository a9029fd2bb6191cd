"""RewardTrainer: learning from oracle preferences, soft labels, confidence, resume, logging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rewards_synthetic import (
    ACT_DIM,
    OBS_DIM,
    TEST_IDS,
    TRAIN_IDS,
    linear_reward,
    make_dataset,
    make_queries,
    nonlinear_reward,
)

from robopref.data import DataValidationError, PreferenceQueries, sample_queries
from robopref.rewards import (
    EnsembleReward,
    GaussianReward,
    MLPReward,
    RewardTrainer,
    RewardTrainerConfig,
    load_reward,
)
from robopref.utils import resolve_device

MODELS = {
    "mlp": lambda: MLPReward(OBS_DIM, ACT_DIM, hidden=(64, 64)),
    "ensemble": lambda: EnsembleReward(OBS_DIM, ACT_DIM, n_members=3, hidden=(64, 64)),
    "gaussian": lambda: GaussianReward(OBS_DIM, ACT_DIM, hidden=(64, 64), prior_std=0.1),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models train fastest on one thread (and the test machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _config(**kw) -> RewardTrainerConfig:
    base = dict(lr=1e-3, epochs=30, batch_size=64, patience=None, quiet=True, seed=0)
    return RewardTrainerConfig(**{**base, **kw})


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def linear_ds():
    return make_dataset(linear_reward)


@pytest.fixture(scope="module")
def nonlinear_ds():
    return make_dataset(nonlinear_reward)


@pytest.mark.parametrize("name", list(MODELS))
def test_models_learn_oracle_pairs(name, linear_ds):
    torch.manual_seed(0)
    train = make_queries(linear_ds, 400, 2, TRAIN_IDS, seed=1)
    test = make_queries(linear_ds, 500, 2, TEST_IDS, seed=2)
    trainer = RewardTrainer(MODELS[name](), _config())
    before = trainer.accuracy(linear_ds, test)
    history = trainer.fit(linear_ds, train)
    after = trainer.accuracy(linear_ds, test)
    assert len(history) == 30 and history[-1]["val_accuracy"] > 0.85
    assert after > 0.9, (before, after)  # chance is 0.5


@pytest.mark.parametrize("loss", ["bt", "plackett_luce", "listnet", "lipo_lambda", "slic", "ipo"])
def test_losses_learn_k4_lists_of_a_nonlinear_reward(loss, nonlinear_ds):
    torch.manual_seed(0)
    train = make_queries(nonlinear_ds, 400, 4, TRAIN_IDS, seed=1)
    test_pairs = make_queries(nonlinear_ds, 500, 2, TEST_IDS, seed=2)
    test_lists = make_queries(nonlinear_ds, 500, 4, TEST_IDS, seed=3)
    # no held-out split: a 40-query validation set is too noisy to pick the best epoch of top-1
    trainer = RewardTrainer(MODELS["mlp"](), _config(loss=loss, epochs=40, val_fraction=0.0))
    trainer.fit(nonlinear_ds, train)
    assert trainer.accuracy(nonlinear_ds, test_pairs) > 0.85  # chance 0.5
    assert trainer.accuracy(nonlinear_ds, test_lists) > 0.6  # top-1 of 4, chance 0.25


@pytest.mark.parametrize("name", ["mlp", "gaussian"])
def test_soft_labels_train(name, linear_ds):
    torch.manual_seed(0)
    train = make_queries(linear_ds, 400, 2, TRAIN_IDS, kind="soft_pair", seed=1)
    assert train.label_kind == "soft_pair" and 0 < train.labels[:, 0].std()
    test = make_queries(linear_ds, 500, 2, TEST_IDS, seed=2)
    trainer = RewardTrainer(MODELS[name](), _config())
    history = trainer.fit(linear_ds, train)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trainer.accuracy(linear_ds, test) > 0.9


def test_soft_labels_need_the_bt_loss(linear_ds):
    train = make_queries(linear_ds, 20, 2, TRAIN_IDS, kind="soft_pair", seed=1)
    with pytest.raises(ValueError, match="soft pair labels need loss 'bt'"):
        RewardTrainer(MODELS["mlp"](), _config(loss="listnet")).fit(linear_ds, train)


def test_gaussian_variance_goes_to_the_prior_without_data(linear_ds):
    torch.manual_seed(0)
    model = GaussianReward(OBS_DIM, ACT_DIM, hidden=(32, 32), prior_std=0.3, reg_weight=1.0)
    with torch.no_grad():
        model.logvar_head.bias.fill_(
            model._inverse_bounds(0.0, -10.0, 2.0)
        )  # sigma = 1, far from 0.3
    obs = np.concatenate([t.state for t in linear_ds])
    act = np.concatenate([t.actions for t in linear_ds])
    with torch.no_grad():
        var0 = float(
            torch.exp(
                model.mean_logvar(torch.as_tensor(obs).float(), torch.as_tensor(act).float())[1]
            ).mean()
        )
    assert var0 == pytest.approx(1.0, rel=0.05)
    # "No data": every query has confidence 0, so only the regulariser acts.
    q = make_queries(linear_ds, 200, 2, TRAIN_IDS, seed=1)
    q.confidence[:] = 0.0
    RewardTrainer(model, _config(lr=1e-2, epochs=40, val_fraction=0.0)).fit(linear_ds, q)
    with torch.no_grad():
        var = torch.exp(
            model.mean_logvar(torch.as_tensor(obs).float(), torch.as_tensor(act).float())[1]
        )
    assert float(var.mean()) == pytest.approx(0.09, rel=0.03)
    assert float(var.max()) < 0.13 and float(var.min()) > 0.05


def test_gaussian_variance_stays_near_prior_on_uninformative_labels(linear_ds):
    torch.manual_seed(0)
    model = GaussianReward(OBS_DIM, ACT_DIM, hidden=(32, 32), prior_std=0.3, reg_weight=1.0)
    with torch.no_grad():
        model.logvar_head.bias.fill_(model._inverse_bounds(0.0, -10.0, 2.0))
    q = make_queries(linear_ds, 200, 2, TRAIN_IDS, seed=1)
    coin = PreferenceQueries(
        q.traj_index, q.start, q.length, np.full((200, 2), 0.5), label_kind="soft_pair"
    )
    RewardTrainer(model, _config(lr=3e-3, epochs=40, val_fraction=0.0, num_samples=4)).fit(
        linear_ds, coin
    )
    obs = torch.as_tensor(np.concatenate([t.state for t in linear_ds])).float()
    act = torch.as_tensor(np.concatenate([t.actions for t in linear_ds])).float()
    with torch.no_grad():
        var = float(torch.exp(model.mean_logvar(obs, act)[1]).mean())
    # coin-flip labels push the sampled return differences towards 0 (lower variance); the KL
    # term holds sigma^2 near 0.09: from 1.0 at the start to within a factor 2 of the prior.
    assert 0.045 < var < 0.1


@pytest.mark.parametrize("name", ["mlp", "gaussian", "ensemble"])
def test_resume_from_checkpoint_equals_uninterrupted_run(name, linear_ds, tmp_path):
    train = make_queries(linear_ds, 150, 2, TRAIN_IDS, seed=1)
    cfg = dict(epochs=6, patience=3, val_fraction=0.2, num_samples=2)

    torch.manual_seed(0)
    full = RewardTrainer(MODELS[name](), _config(**cfg, checkpoint_dir=str(tmp_path / "a")))
    hist_full = full.fit(linear_ds, train)

    torch.manual_seed(0)
    part = RewardTrainer(
        MODELS[name](), _config(**{**cfg, "epochs": 3}, checkpoint_dir=str(tmp_path / "b"))
    )
    part.fit(linear_ds, train)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["last.pt"]
    torch.manual_seed(999)  # a different initialisation: everything must come from the checkpoint
    resumed = RewardTrainer(MODELS[name](), _config(**cfg, checkpoint_dir=str(tmp_path / "b")))
    hist_resumed = resumed.fit(linear_ds, train)

    assert hist_resumed == hist_full and len(hist_full) == 6
    torch.testing.assert_close(_params(resumed.model), _params(full.model), rtol=0, atol=0)
    # a checkpoint written with another setup is refused, naming the field
    with pytest.raises(ValueError, match="config field 'lr'"):
        RewardTrainer(
            MODELS[name](), _config(**cfg, lr=0.1, checkpoint_dir=str(tmp_path / "b"))
        ).fit(linear_ds, train)
    with pytest.raises(ValueError, match="num_train_queries"):
        RewardTrainer(MODELS[name](), _config(**cfg, checkpoint_dir=str(tmp_path / "b"))).fit(
            linear_ds, train.subset(np.arange(100))
        )


def test_zero_confidence_query_has_no_effect(linear_ds):
    q = make_queries(linear_ds, 200, 2, TRAIN_IDS, seed=1)
    flipped_labels = q.labels.copy()
    flipped_labels[:100] = flipped_labels[:100, ::-1]

    def run(labels, confidence, use_confidence=True):
        torch.manual_seed(0)
        qq = PreferenceQueries(
            q.traj_index, q.start, q.length, labels, confidence=confidence, label_kind="graded"
        )
        trainer = RewardTrainer(
            MODELS["mlp"](), _config(epochs=5, val_fraction=0.0, use_confidence=use_confidence)
        )
        trainer.fit(linear_ds, qq)
        return _params(trainer.model)

    conf = np.r_[np.zeros(100), np.ones(100)]
    base = run(q.labels, conf)
    torch.testing.assert_close(run(flipped_labels, conf), base, rtol=0, atol=0)
    # the same flip with full confidence (or with use_confidence off) does change the model
    assert not torch.allclose(run(flipped_labels, np.ones(200)), run(q.labels, np.ones(200)))
    assert not torch.allclose(run(flipped_labels, conf, use_confidence=False), base)


def test_half_confidence_scales_the_gradient(linear_ds):
    q = make_queries(linear_ds, 64, 2, TRAIN_IDS, seed=1)
    grads = []
    for c in (1.0, 0.5):
        torch.manual_seed(0)
        qq = PreferenceQueries(
            q.traj_index,
            q.start,
            q.length,
            q.labels,
            confidence=np.full(64, c),
            label_kind="graded",
        )
        trainer = RewardTrainer(
            MODELS["mlp"](), _config(epochs=1, val_fraction=0.0, batch_size=64, lr=1e-12)
        )
        trainer.fit(linear_ds, qq)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]))
    torch.testing.assert_close(grads[1], 0.5 * grads[0], rtol=1e-5, atol=1e-8)


def test_device_auto_works(linear_ds):
    trainer = RewardTrainer(MODELS["gaussian"](), _config(epochs=2, device="auto"))
    assert trainer.device == resolve_device("auto")
    assert trainer.model.device.type == trainer.device.type
    if not torch.cuda.is_available():
        assert trainer.device.type == "cpu"
    trainer.fit(linear_ds, make_queries(linear_ds, 50, 2, TRAIN_IDS, seed=1))
    assert math.isfinite(trainer.history[-1]["train_loss"])


def test_early_stopping_restores_the_best_epoch(linear_ds):
    torch.manual_seed(0)
    val = make_queries(linear_ds, 100, 2, TRAIN_IDS, seed=3)
    train = make_queries(linear_ds, 300, 2, TRAIN_IDS, seed=1)
    # train on reversed labels after a short warm start: the held-out accuracy falls, training stops
    trainer = RewardTrainer(MODELS["mlp"](), _config(epochs=2))
    trainer.fit(linear_ds, train, val_queries=val)
    reversed_train = PreferenceQueries(
        train.traj_index,
        train.start,
        train.length,
        train.labels[:, ::-1].copy(),
        label_kind="graded",
    )
    trainer2 = RewardTrainer(trainer.model, _config(epochs=100, patience=3))
    history = trainer2.fit(linear_ds, reversed_train, val_queries=val)
    assert len(history) < 100
    best = max(history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert history.index(best) == len(history) - 4  # 3 epochs without improvement after it
    assert trainer2.accuracy(linear_ds, val) == pytest.approx(best["val_accuracy"])
    assert history[-1]["val_accuracy"] < best["val_accuracy"]


def test_trainer_save_load_and_tensorboard(linear_ds, tmp_path):
    torch.manual_seed(0)
    train = make_queries(linear_ds, 100, 2, TRAIN_IDS, seed=1)
    trainer = RewardTrainer(MODELS["ensemble"](), _config(epochs=3, log_dir=str(tmp_path / "tb")))
    trainer.fit(linear_ds, train)
    trainer.save(tmp_path / "trainer.pt")
    again = RewardTrainer.load(tmp_path / "trainer.pt")
    assert again.history == trainer.history and again.config == trainer.config
    obs, act = np.ones((3, OBS_DIM)), np.zeros((3, ACT_DIM))
    np.testing.assert_array_equal(again.model.predict(obs, act), trainer.model.predict(obs, act))
    np.testing.assert_array_equal(
        load_reward(tmp_path / "trainer.pt").predict(obs, act), trainer.model.predict(obs, act)
    )

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy"} <= tags
    assert [e.step for e in events.Scalars("val/accuracy")] == [0, 1, 2]
    assert events.Scalars("train/loss")[-1].value == pytest.approx(
        trainer.history[-1]["train_loss"], rel=1e-5
    )


def test_bad_inputs_raise_clear_errors(linear_ds):
    unlabelled = sample_queries(linear_ds, 10, 2, 10, np.random.default_rng(0))
    with pytest.raises(
        ValueError, match="label_kind': expected 'graded' or 'soft_pair', found 'none'"
    ):
        RewardTrainer(MODELS["mlp"](), _config()).fit(linear_ds, unlabelled)
    q = make_queries(linear_ds, 10, 2, TRAIN_IDS, seed=1)
    with pytest.raises(DataValidationError, match="expected obs_dim = 7"):
        RewardTrainer(MLPReward(7, ACT_DIM, hidden=(8,)), _config()).fit(linear_ds, q)
    with pytest.raises(ValueError, match="lr"):
        RewardTrainerConfig(lr=-1.0)
    with pytest.raises(ValueError, match="batch_sise"):
        RewardTrainerConfig(batch_sise=3)
    with pytest.raises(ValueError, match="loss: expected one of"):
        RewardTrainerConfig(loss="hinge_typo")
    with pytest.raises(ValueError, match="unknown"):
        RewardTrainerConfig(loss="ipo", loss_options={"margin": 1.0})
    RewardTrainerConfig(loss="ipo", loss_options={"beta": 0.5})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gaussian_trains_and_resumes_on_cuda(linear_ds, tmp_path):
    train = make_queries(linear_ds, 400, 2, TRAIN_IDS, seed=1)
    test = make_queries(linear_ds, 500, 2, TEST_IDS, seed=2)
    cfg = dict(device="cuda", num_samples=2, checkpoint_dir=str(tmp_path / "ckpt"))
    torch.manual_seed(0)
    trainer = RewardTrainer(MODELS["gaussian"](), _config(**cfg, epochs=15))
    trainer.fit(linear_ds, train)
    assert trainer.model.device.type == "cuda"
    torch.manual_seed(1)
    resumed = RewardTrainer(MODELS["gaussian"](), _config(**cfg, epochs=30))
    resumed.fit(linear_ds, train)
    assert len(resumed.history) == 30 and resumed.history[:15] == trainer.history
    assert resumed.accuracy(linear_ds, test) > 0.9
    assert load_reward(tmp_path / "ckpt" / "last.pt", device="cpu").device.type == "cpu"
