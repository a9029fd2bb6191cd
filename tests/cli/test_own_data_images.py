"""The own-data steps on camera frames through the command line: train-reward on an image key,
score and relabel with that reward, the card's image shape, and the mismatch errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_factory import ROOT, assert_one_line_error, run_cli

from robopref.data import Trajectory, TrajectoryDataset, load_dataset, save_dataset
from robopref.methods.common import file_fingerprint
from robopref.rewards import ImageReward, load_reward
from robopref.teachers import label_queries

FIXTURE = ROOT / "tests" / "fixtures" / "lerobot" / "v30_image"
FAST = ["trainer.epochs=25", "trainer.patience=null", "trainer.lr=0.001", "model.hidden=[32]",
        "model.image.cnn_width=8", "model.image.embed_dim=16", "model.image.shift=0"]  # fmt: skip


def pixel_dataset(n: int = 12, T: int = 20, size: int = 24, seed: int = 0) -> TrajectoryDataset:
    """Episodes whose reward is visible only in the pixels: a square's brightness is the step's
    reward (in [0, 1]) on a noisy background; the ``state`` key is noise unrelated to it."""
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n):
        r = rng.uniform(0, 1, size=T)
        frames = rng.integers(0, 60, size=(T, size, size, 3), dtype=np.uint8)
        frames[:, 6:18, 6:18, :] = (r * 255).astype(np.uint8)[:, None, None, None]
        trajs.append(
            Trajectory(
                observations={
                    "state": rng.normal(size=(T, 4)).astype(np.float32),
                    "image": frames,
                },  # fmt: skip
                actions=rng.uniform(-1, 1, size=(T, 2)).astype(np.float32),
                rewards=r,
                task="pixels",
            )
        )
    return TrajectoryDataset(trajs)


def pixel_file(path, size: int = 24, labels: int = 200):
    ds = pixel_dataset(size=size)
    ds.queries = label_queries(ds, "oracle", labels, segment_length=5, seed=1)
    save_dataset(ds, path)
    return path


def ok(res):
    assert res.rc == 0, res.err
    return res


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """train-reward on the image key and on the state key, once for the module."""
    d = tmp_path_factory.mktemp("pix")
    pixel_file(d / "p.h5")
    ok(run_cli("--quiet", "train-reward", d / "p.h5", "obs_key=image", "--out", d / "img", *FAST))
    ok(run_cli("--quiet", "train-reward", d / "p.h5", "--out", d / "st", "trainer.epochs=5",
               "model.hidden=[16]"))  # fmt: skip
    return d


def test_image_reward_learns_the_preference_from_pixels(pixels):
    row = json.loads((pixels / "img" / "results.json").read_text())["rows"][0]
    assert row["obs_key"] == "image" and row["obs_shape"] == [24, 24, 3] and row["model"] == "cnn"
    assert row["test_queries"] == 40
    # the state key is noise: only the pixels carry the preference (chance is 0.5)
    assert row["test_accuracy"] >= 0.8, row
    card = json.loads((pixels / "img" / "reward.card.json").read_text())
    assert card["obs_kind"] == "image" and card["obs_shape"] == [24, 24, 3]
    assert card["obs_dim"] is None and card["act_dim"] == 2
    assert card["config"]["model"]["image"]["cnn_width"] == 8
    model = load_reward(pixels / "img" / "reward.pt")
    assert isinstance(model, ImageReward) and model.obs_shape == (24, 24, 3)


def test_score_and_relabel_with_an_image_reward(pixels, tmp_path):
    ckpt = pixels / "img" / "reward.pt"
    res = ok(run_cli("score", pixels / "p.h5", "--reward", ckpt, "--json"))
    rows = json.loads(res.out)["rows"]
    src = load_dataset(pixels / "p.h5")
    assert sorted(r["episode"] for r in rows) == list(range(len(src)))
    model = load_reward(ckpt)
    for r in rows:
        t = src[r["episode"]]
        want = model.predict(t.observations["image"], t.actions).sum()
        assert r["learned_return"] == pytest.approx(float(want), rel=1e-5, abs=1e-5)
    # the learned returns follow the true ones (the square's brightness)
    learned = [r["learned_return"] for r in sorted(rows, key=lambda r: r["episode"])]
    assert np.corrcoef(learned, [t.rewards.sum() for t in src])[0, 1] > 0.7

    ok(run_cli("--quiet", "relabel", pixels / "p.h5", "--reward", ckpt, "--out", tmp_path / "r.h5",
               "batch_size=7"))  # fmt: skip
    rel = load_dataset(tmp_path / "r.h5")
    assert rel.metadata["relabel"]["card"]["obs_shape"] == [24, 24, 3]
    assert rel.metadata["reward_source"]["obs_shape"] == [24, 24, 3]
    for s, t in zip(src, rel):
        raw = t.extras["learned_reward_raw"]
        assert raw.shape == (len(s),) and t.rewards.shape == (len(s),)
        np.testing.assert_allclose(raw, model.predict(s.observations["image"], s.actions),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        np.testing.assert_array_equal(t.observations["image"], s.observations["image"])
    flat = np.concatenate([t.extras["learned_reward_raw"] for t in rel])
    true = np.concatenate([t.rewards for t in src])
    assert np.corrcoef(flat, true)[0, 1] > 0.7


def test_mismatched_checkpoints_are_one_line_errors(pixels, tmp_path):
    img, st = pixels / "img" / "reward.pt", pixels / "st" / "reward.pt"
    bigger = pixel_file(tmp_path / "big.h5", size=32, labels=20)
    before = file_fingerprint(bigger)
    # an image reward of 24x24 frames on 32x32 frames
    res = run_cli("relabel", bigger, "--reward", img, "--out", tmp_path / "x.h5")
    assert_one_line_error(res, "reward.pt", "'image' as images 24x24x3", "found images 32x32x3")
    res = run_cli("score", bigger, "--reward", img)
    assert_one_line_error(res, "'image' as images 24x24x3", "found images 32x32x3")
    # a state reward whose card names an image key: a vector reward on frames
    card = json.loads((pixels / "st" / "reward.card.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "reward.pt").write_bytes(st.read_bytes())
    (other / "reward.card.json").write_text(json.dumps({**card, "obs_key": "image"}))
    res = run_cli("relabel", pixels / "p.h5", "--reward", other / "reward.pt",
                  "--out", tmp_path / "y.h5")  # fmt: skip
    assert_one_line_error(res, "as vectors of size 4", "found images 24x24x3")
    # an image reward whose card names the state key
    (other / "reward.pt").write_bytes(img.read_bytes())
    (other / "reward.card.json").write_text(json.dumps({**card, "obs_key": "state"}))
    res = run_cli("score", pixels / "p.h5", "--reward", other / "reward.pt")
    assert_one_line_error(res, "'state' as images 24x24x3", "found vectors of size 4")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()
    assert file_fingerprint(bigger) == before


def test_train_policy_on_an_image_key_is_refused(pixels, tmp_path):
    res = run_cli("train-policy", pixels / "p.h5", "obs_key=image", "policy.name=cpl",
                  "--out", tmp_path / "p")  # fmt: skip
    assert_one_line_error(res, "'image'", "found images 24x24x3", "offline policies read state")
    assert not (tmp_path / "p").exists()


def test_gaussian_reward_on_an_image_key_is_refused(pixels, tmp_path):
    res = run_cli("train-reward", pixels / "p.h5", "obs_key=image", "model.kind=gaussian",
                  "--out", tmp_path / "r")  # fmt: skip
    assert_one_line_error(res, "model.kind", "image key 'image'", "found gaussian")
    assert not (tmp_path / "r").exists()


def test_image_ensemble_on_the_lerobot_fixture(tmp_path):
    """The LeRobot fixture's camera feature (64x64 frames) through import and train-reward with
    an ensemble of CNN rewards; its disagreement ranks queries for active selection."""
    ok(run_cli("import", FIXTURE, tmp_path / "a.h5"))
    ok(run_cli("--quiet", "label", tmp_path / "a.h5", "num_queries=20", "segment_length=3"))
    ok(run_cli("--quiet", "train-reward", tmp_path / "a.h5", "obs_key=images.cam",
               "model.kind=ensemble", "model.members=2", "--out", tmp_path / "r", *FAST[:2],
               "trainer.epochs=2", "model.image.cnn_width=4"))  # fmt: skip
    card = json.loads((tmp_path / "r" / "reward.card.json").read_text())
    assert card["obs_key"] == "images.cam" and card["obs_shape"] == [64, 64, 3]
    assert card["model"] == "cnn-ensemble"
    model = load_reward(tmp_path / "r" / "reward.pt")
    assert type(model).__name__ == "ImageEnsembleReward" and model.n_members == 2
    data = load_dataset(tmp_path / "a.h5")
    from robopref.methods.own_data.data import observation_view

    view = observation_view(data, "images.cam", "a.h5")
    spread = model.disagreement(view, view.queries)
    assert spread.shape == (20,) and np.all(spread >= 0) and spread.max() > 0
