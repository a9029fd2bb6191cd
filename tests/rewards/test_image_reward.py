"""Image rewards: frames gathered per batch (uint8, no float copy of the data), the CNN reward's
checkpoints, chunked prediction and the augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopref.data import DataValidationError, Trajectory, TrajectoryDataset
from robopref.rewards import (
    ImageEnsembleReward,
    ImageReward,
    MLPReward,
    RewardTrainer,
    RewardTrainerConfig,
    gather_segments,
    load_reward,
    save_reward,
)
from robopref.rewards.image import random_shift
from robopref.teachers import label_queries


def frames_dataset(n=6, T=12, size=16, seed=0):
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n):
        r = rng.uniform(0, 1, T)
        img = rng.integers(0, 40, (T, size, size, 3), dtype=np.uint8)
        img[:, 4:12, 4:12] = (r * 255).astype(np.uint8)[:, None, None, None]
        trajs.append(Trajectory(img, rng.uniform(-1, 1, (T, 2)).astype(np.float32), r))
    ds = TrajectoryDataset(trajs)
    ds.queries = label_queries(ds, "oracle", 80, segment_length=4, seed=0)
    return ds


def test_frames_are_gathered_lazily_as_uint8():
    ds = frames_dataset()
    q = ds.queries
    seg = gather_segments(ds, q, act_dim=2, obs_shape=(16, 16, 3))
    assert seg.lazy and seg.obs is None and seg.frames.dtype == torch.uint8
    # one copy of the steps (plus the zero row), not one per segment step
    assert seg.frames.shape == (sum(len(t) for t in ds) + 1, 16, 16, 3)
    batch = seg[3:7]
    assert not batch.lazy and batch.obs.dtype == torch.uint8
    assert batch.obs.shape == (4, 2, 4, 16, 16, 3)
    for b, i in enumerate(range(3, 7)):
        for k in range(2):
            t, s = q.traj_index[i, k], q.start[i, k]
            want = ds[int(t)].observations[s : s + q.length[i, k]]
            np.testing.assert_array_equal(batch.obs[b, k].numpy(), want)
    np.testing.assert_array_equal(batch.act.numpy(), seg.act[3:7].numpy())


def test_vector_reward_on_frames_is_one_error():
    ds = frames_dataset()
    with pytest.raises(DataValidationError, match=r"expected obs_dim = 5 .* per-step shape"):
        gather_segments(ds, ds.queries, 5, 2)
    with pytest.raises(DataValidationError, match=r"\(16, 16, 3\) .* found per-step shape \(8"):
        small = TrajectoryDataset([Trajectory(t.observations[:, :8, :8], t.actions, t.rewards)
                                   for t in ds], ds.queries)  # fmt: skip
        gather_segments(small, ds.queries, act_dim=2, obs_shape=(16, 16, 3))


def test_image_reward_learns_and_round_trips(tmp_path):
    torch.manual_seed(0)
    ds = frames_dataset(n=10)
    model = ImageReward((16, 16, 3), act_dim=2, cnn_width=4, embed_dim=8, hidden=(16,), shift=1)
    cfg = RewardTrainerConfig(epochs=30, lr=3e-3, batch_size=16, patience=None, quiet=True,
                              device="cpu", val_fraction=0)  # fmt: skip
    trainer = RewardTrainer(model, cfg)
    trainer.fit(ds, ds.queries)
    assert trainer.accuracy(ds, ds.queries) >= 0.85
    save_reward(trainer.model, tmp_path / "r.pt")
    back = load_reward(tmp_path / "r.pt")
    assert isinstance(back, ImageReward) and back.obs_shape == (16, 16, 3) and back.shift == 1
    t = ds[0]
    whole = back.predict(t.observations, t.actions)
    np.testing.assert_allclose(back.predict(t.observations, t.actions, batch_size=5), whole,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(trainer.model.predict(t.observations, t.actions), whole, rtol=1e-5)


def test_image_ensemble_disagreement_and_checkpoint(tmp_path):
    ds = frames_dataset()
    model = ImageEnsembleReward((16, 16, 3), act_dim=2, n_members=3, cnn_width=4, embed_dim=8)
    spread = model.disagreement(ds, ds.queries)
    assert spread.shape == (80,) and spread.max() > 0
    save_reward(model, tmp_path / "e.pt")
    back = load_reward(tmp_path / "e.pt")
    assert type(back) is ImageEnsembleReward and back.n_members == 3
    np.testing.assert_allclose(back.disagreement(ds, ds.queries), spread, rtol=1e-5, atol=1e-7)


def test_predict_refuses_other_frames():
    model = ImageReward((16, 16, 3), act_dim=0, cnn_width=4)
    with pytest.raises(ValueError, match=r"expected shape \[\.\.\., 16, 16, 3\]"):
        model.predict(np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="image_shape"):
        ImageReward((16, 16, 1))
    # a vector reward keeps its old checks
    with pytest.raises(ValueError, match=r"act: expected shape \[\.\.\., 2\]"):
        MLPReward(3, 2).predict(np.zeros((4, 3)))


def test_random_shift_is_a_crop_of_the_padded_frame():
    x = torch.arange(2 * 6 * 6 * 3, dtype=torch.float32).reshape(2, 6, 6, 3)
    assert torch.equal(random_shift(x, 0), x)
    y = random_shift(x, 2, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (2, 2, 2, 2), mode="replicate")
    padded = padded.permute(0, 2, 3, 1)
    for n in range(2):
        hits = [
            (i, j)
            for i in range(5)
            for j in range(5)
            if torch.equal(padded[n, i : i + 6, j : j + 6], y[n])
        ]
        assert hits, n
