"""The own-data chain through the command line on the LeRobot fixture, and its bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cli_factory import ROOT, assert_one_line_error, run_cli, tiny_file

from robopref.data import load_dataset
from robopref.methods.common import file_fingerprint
from robopref.rewards import load_reward

FIXTURE = ROOT / "tests" / "fixtures" / "lerobot" / "v30_image"
FAST_REWARD = ["trainer.epochs=30", "trainer.patience=null", "model.hidden=[16,16]"]


def _frames(root) -> tuple[dict[str, np.ndarray], dict]:
    """The non-image columns of a LeRobot v3.0 folder's frames, and its features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    feats = json.loads((root / "meta" / "info.json").read_text())["features"]
    cols = {
        name: np.asarray(table.column(name).to_pylist())
        for name, f in feats.items()
        if f["dtype"] not in ("image", "video")
    }
    return cols, feats


def ok(res):
    assert res.rc == 0, res.err
    return res


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """import -> label (teacher) -> train-reward -> relabel, once for the module."""
    d = tmp_path_factory.mktemp("own")
    ok(run_cli("import", FIXTURE, d / "a.h5"))
    ok(run_cli("--quiet", "label", d / "a.h5", "num_queries=40", "segment_length=4"))
    ok(run_cli("--quiet", "train-reward", d / "a.h5", "--out", d / "r", *FAST_REWARD))
    ok(run_cli("--quiet", "relabel", d / "a.h5", "--reward", d / "r" / "reward.pt",
               "--out", d / "rel.h5"))  # fmt: skip
    return d


def test_train_reward_writes_checkpoint_card_and_result(chain):
    card = json.loads((chain / "r" / "reward.card.json").read_text())
    assert card["obs_key"] == "state" and (card["obs_dim"], card["act_dim"]) == (4, 3)
    assert card["data"]["sha256"] == file_fingerprint(chain / "a.h5")
    assert card["checkpoint_sha256"] == file_fingerprint(chain / "r" / "reward.pt")
    assert card["config"]["trainer"]["epochs"] == 30
    row = json.loads((chain / "r" / "results.json").read_text())["rows"][0]
    assert row["train_queries"] + row["test_queries"] == 40 and row["test_queries"] == 8
    assert 0.0 <= row["test_accuracy"] <= 1.0 and row["test_se"] is not None
    assert card["metrics"]["test_accuracy"] == row["test_accuracy"]


def test_relabel_writes_learned_rewards_and_provenance(chain):
    src, rel = load_dataset(chain / "a.h5"), load_dataset(chain / "rel.h5")
    meta = rel.metadata["relabel"]
    assert meta["reward_sha256"] == file_fingerprint(chain / "r" / "reward.pt")
    assert meta["source_sha256"] == file_fingerprint(chain / "a.h5")
    assert meta["card"]["obs_key"] == "state"
    flat = np.concatenate([t.rewards for t in rel])
    assert abs(flat.mean()) < 1e-9 and flat.std() == pytest.approx(1.0)
    model = load_reward(chain / "r" / "reward.pt")
    norm = meta["normalisation"]
    assert rel.metadata["reward_source"]["normalisation"] == norm
    assert rel.metadata["reward_source"]["kind"] == "learned"
    for s, t in zip(src, rel):
        # one layout with export --reward: per-step arrays in extras, nothing in metadata
        assert "learned_reward_raw" not in t.metadata and "original_rewards" not in t.metadata
        raw = t.extras["learned_reward_raw"]
        np.testing.assert_allclose(raw, model.predict(s.state, s.actions), rtol=1e-6)
        np.testing.assert_allclose(t.rewards, (raw - norm["mean"]) / norm["std"])
        np.testing.assert_array_equal(t.extras["original_rewards"], s.rewards)
        np.testing.assert_array_equal(t.observations["state"], s.observations["state"])
    assert len(rel.queries) == len(src.queries)


def test_relabelling_a_relabelled_file_keeps_the_source_originals(chain, tmp_path):
    ok(run_cli("--quiet", "relabel", chain / "rel.h5", "--reward", chain / "r" / "reward.pt",
               "--out", tmp_path / "twice.h5"))  # fmt: skip
    src, rel = load_dataset(chain / "a.h5"), load_dataset(chain / "rel.h5")
    twice = load_dataset(tmp_path / "twice.h5")
    for s, a, b in zip(src, rel, twice):
        np.testing.assert_array_equal(b.extras["original_rewards"], s.rewards)
        np.testing.assert_allclose(b.extras["learned_reward_raw"], a.extras["learned_reward_raw"])
        np.testing.assert_allclose(b.rewards, a.rewards)


def test_score_keeps_top_episodes(chain):
    res = ok(run_cli("score", chain / "a.h5", "--reward", chain / "r" / "reward.pt",
                     "--keep-top", "0.5", "--out", chain / "top.h5", "--json"))  # fmt: skip
    rows = json.loads(res.out)["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    returns = [r["learned_return"] for r in rows]
    assert returns == sorted(returns, reverse=True)
    top = load_dataset(chain / "top.h5")
    src = load_dataset(chain / "a.h5")
    kept = [r["episode"] for r in rows if r["kept"]]
    assert len(top) == 2 and len(kept) == 2
    np.testing.assert_array_equal(top[0].actions, src[min(kept)].actions)
    ok(run_cli("--quiet", "score", chain / "a.h5", "--reward", chain / "r" / "reward.pt",
               "--keep-top", "0.5", "--out", chain / "flag.h5", "--keep-failures"))  # fmt: skip
    flagged = load_dataset(chain / "flag.h5")
    assert len(flagged) == 4 and sorted(flagged.metadata["filter_keys"]["top"]) == sorted(kept)
    assert [t.metadata["kept"] for t in flagged] == [i in kept for i in range(4)]


def test_chain_policy_export_and_reimport(chain):
    for name in ("iql", "cpl"):
        data = chain / ("rel.h5" if name == "iql" else "a.h5")
        ok(run_cli("--quiet", "train-policy", data, "--out", chain / f"p-{name}",
                   f"policy.name={name}", f"policy.{name}.steps=50", "holdout=0"))  # fmt: skip
        row = json.loads((chain / f"p-{name}" / "results.json").read_text())["rows"][0]
        assert row["policy"] == name and row["policy_steps"] == 50
        assert row["pref_queries"] == 40 and 0 <= row["pref_accuracy"] <= 1
        assert (chain / f"p-{name}" / "policy.pt").is_file()
    ok(run_cli("export", chain / "rel.h5", chain / "lerobot", "--format", "lerobot"))
    src, rel = load_dataset(chain / "a.h5"), load_dataset(chain / "rel.h5")
    # the frames written: the learned (normalised) reward, the original and the raw beside it
    frames, feats = _frames(chain / "lerobot")
    ep = frames["episode_index"]
    for e, (s, t) in enumerate(zip(src, rel)):
        np.testing.assert_allclose(frames["next.reward"][ep == e], t.rewards, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(frames["next.original_reward"][ep == e], s.rewards, rtol=1e-6)
        np.testing.assert_allclose(
            frames["robopref.learned_reward_raw"][ep == e], t.extras["learned_reward_raw"],
            rtol=1e-6,
        )  # fmt: skip
    assert not np.allclose(frames["next.reward"], frames["next.original_reward"])
    # meta/stats.json: LeRobot's normalisation statistics of exactly these frames
    stats = json.loads((chain / "lerobot" / "meta" / "stats.json").read_text())
    assert {"next.reward", "next.original_reward", "action"} <= set(stats) <= set(feats)
    for name, values in frames.items():
        v = values.reshape(len(values), -1).astype(np.float64)
        got = stats[name]
        np.testing.assert_allclose(got["mean"], v.mean(0), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got["std"], v.std(0), rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got["min"], v.min(0), rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(got["max"], v.max(0), rtol=1e-6, err_msg=name)
        assert got["count"] == [len(values)], name
    image = stats["observation.images.cam"]
    assert np.shape(image["mean"]) == (3, 1, 1) and image["count"] == [len(ep)]

    ok(run_cli("import", chain / "lerobot", chain / "back.h5"))
    back = load_dataset(chain / "back.h5")
    assert len(back) == len(rel) and [len(t) for t in back] == [len(t) for t in rel]
    for s, a, b in zip(src, rel, back):
        assert b.observations["state"].shape == a.observations["state"].shape
        np.testing.assert_allclose(b.rewards, a.rewards, rtol=1e-6, atol=1e-6)  # learned column
        np.testing.assert_allclose(b.extras["original_rewards"], s.rewards, rtol=1e-6)
        np.testing.assert_allclose(
            b.extras["learned_reward_raw"], a.extras["learned_reward_raw"], rtol=1e-6
        )
    assert back.queries is not None and len(back.queries) == len(rel.queries)


# ---- bad input: one line, exit 2, nothing written -------------------------------------------


def test_train_reward_and_cpl_need_labels(tmp_path):
    data = tiny_file(tmp_path / "t.h5")
    res = run_cli("train-reward", data, "--out", tmp_path / "r")
    assert_one_line_error(res, "t.h5", "needs labelled preference queries", "robopref label")
    res = run_cli("train-policy", data, "policy.name=cpl", "--out", tmp_path / "p")
    assert_one_line_error(res, "policy.name=cpl", "no preference queries")
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()


def test_filtered_bc_needs_rewards(tmp_path):
    data = tiny_file(tmp_path / "t.h5", rewards=False)
    res = run_cli("train-policy", data, "policy.name=filtered_bc", "--out", tmp_path / "p")
    assert_one_line_error(res, "without recorded rewards", "robopref relabel")
    assert not (tmp_path / "p").exists()


def test_unknown_policy_name(tmp_path):
    data = tiny_file(tmp_path / "t.h5")
    res = run_cli("train-policy", data, "policy.name=ppo", "--out", tmp_path / "p")
    assert_one_line_error(res, "policy", "unknown learner 'ppo'")
    assert not (tmp_path / "p").exists()


def test_relabel_onto_source_and_foreign_checkpoints(chain, tmp_path):
    before = file_fingerprint(chain / "a.h5")
    ckpt = chain / "r" / "reward.pt"
    res = run_cli("relabel", chain / "a.h5", "--reward", ckpt, "--out", chain / "a.h5")
    assert_one_line_error(res, "expected a new file", "--in-place")
    assert file_fingerprint(chain / "a.h5") == before
    # a reward for another observation size (3, the tiny file's) on the fixture (4)
    tiny = tiny_file(tmp_path / "t.h5", labels=30)
    ok(run_cli("--quiet", "train-reward", tiny, "--out", tmp_path / "r", *FAST_REWARD))
    res = run_cli("relabel", chain / "a.h5", "--reward", tmp_path / "r" / "reward.pt",
                  "--out", tmp_path / "x.h5")  # fmt: skip
    assert_one_line_error(res, "reward.pt", "'state' of size 3", "found size 4")
    # a reward for another observation key
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(ckpt, other / "reward.pt")
    card = json.loads((chain / "r" / "reward.card.json").read_text())
    (other / "reward.card.json").write_text(json.dumps({**card, "obs_key": "joints"}))
    res = run_cli("score", chain / "a.h5", "--reward", other / "reward.pt")
    assert_one_line_error(res, "reads observation 'joints'", "images.cam")
    # not a checkpoint at all
    res = run_cli("relabel", chain / "a.h5", "--reward", chain / "a.h5", "--out", tmp_path / "y.h5")
    assert_one_line_error(res, "expected a reward checkpoint")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_offline_policies_refuse_image_observations(chain, tmp_path):
    res = run_cli("train-policy", chain / "rel.h5", "obs_key=images.cam", "--out", tmp_path / "p")
    assert_one_line_error(res, "images.cam", "found images 64x64x3", "state vectors only")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("name", ["train-reward", "relabel", "train-policy"])
def test_shipped_configs_validate(name):
    from robopref.config import read_config_data, validate_config
    from robopref.methods import get_method

    path = ROOT / "robopref" / "configs" / "own_data" / f"{name}.yaml"
    raw = read_config_data(
        str(path), ["data=d.h5", "reward=r.pt", "out=o.h5"][: 1 + 2 * (name == "relabel")]
    )
    assert raw["method"] == name
    config = validate_config(get_method(name).Config, raw, str(path))
    assert config.data == "d.h5"
