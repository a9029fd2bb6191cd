"""Rewards, tasks, names and statistics back to LeRobot and robomimic.

An episode whose task changes midway keeps each frame's task through import, HDF5 and export;
``meta/stats.json`` is LeRobot's normalisation statistics of the frames written; features keep
their ``names``; a source without rewards exports no reward column; ``export --reward CKPT``
writes a reward model's per-step rewards and keeps the recorded ones.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from robopref.cli import main
from robopref.data import Trajectory, TrajectoryDataset, load_dataset, save_dataset
from robopref.data.formats import lerobot_stats
from robopref.data.importers import import_lerobot

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FIXTURES = Path(__file__).parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))
sys.path.insert(0, str(Path(__file__).parent))
from lerobot_factory import write_lerobot  # noqa: E402

LEROBOT = FIXTURES / "lerobot"
STACK, DRAWER = "stack the red block on the blue one", "open the top drawer"


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _frames(root: Path) -> dict[str, np.ndarray]:
    """Every column of a v3.0 folder's data files, images decoded ([N, H, W, 3] uint8)."""
    from PIL import Image

    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    info = json.loads((root / "meta/info.json").read_text())
    out = {}
    for name, feat in info["features"].items():
        col = table.column(name)
        if feat["dtype"] == "image":
            cells = col.to_pylist()
            out[name] = np.stack(
                [np.asarray(Image.open(io.BytesIO(c["bytes"])).convert("RGB")) for c in cells]
            )
        else:
            out[name] = np.asarray(col.to_pylist(), dtype=feat["dtype"])
    return out


def _two_task_dataset(rewards: bool = True) -> TrajectoryDataset:
    rng = np.random.default_rng(0)
    trajs = []
    for e in range(3):
        T = 14
        step_tasks = [STACK] * 7 + [DRAWER] * 7 if e == 0 else None
        trajs.append(
            Trajectory(
                rng.normal(size=(T, 9)).astype(np.float32),
                rng.uniform(-1, 1, (T, 2)).astype(np.float32),
                rng.normal(size=T).astype(np.float32) if rewards else np.zeros(T),
                task="kitchen",
                instruction=STACK if e != 2 else DRAWER,
                step_tasks=step_tasks,
            )
        )
    names = {"observation.state": [f"q{i}" for i in range(9)], "action": ["vx", "vy"]}
    meta = {"feature_names": names} | ({} if rewards else {"rewards_recorded": False})
    return TrajectoryDataset(trajs, metadata=meta)


# --------------------------------------------------------------------------- per-frame tasks


def test_episode_with_two_tasks_round_trips_through_hdf5_export_and_import(tmp_path, capsys):
    ds = _two_task_dataset()
    save_dataset(ds, tmp_path / "d.h5")
    h5 = load_dataset(tmp_path / "d.h5")
    np.testing.assert_array_equal(h5[0].step_tasks, [STACK] * 7 + [DRAWER] * 7)
    assert (
        h5[1].step_tasks is None
        and h5[0].slice(5, 4).step_tasks.tolist() == [STACK] * 2 + [DRAWER] * 2
    )

    code, _, err = _cli(capsys, "export", str(tmp_path / "d.h5"), str(tmp_path / "lr"),
                        "--format", "lerobot")  # fmt: skip
    assert code == 0, err
    frames = _frames(tmp_path / "lr")
    tasks = pq.read_table(tmp_path / "lr/meta/tasks.parquet").to_pydict()
    names = dict(zip(tasks["task_index"], tasks["task"]))
    per_frame = [names[i] for i in frames["task_index"][frames["episode_index"] == 0]]
    assert per_frame == [STACK] * 7 + [DRAWER] * 7
    episodes = pq.read_table(tmp_path / "lr/meta/episodes/chunk-000/file-000.parquet")
    assert episodes.column("tasks").to_pylist() == [[STACK, DRAWER], [STACK], [DRAWER]]

    back = import_lerobot(tmp_path / "lr")
    np.testing.assert_array_equal(back[0].step_tasks, ds[0].step_tasks)
    assert back[1].step_tasks is None and back[2].instruction == DRAWER
    # and through the streamed import to HDF5
    code, _, err = _cli(capsys, "import", str(tmp_path / "lr"), str(tmp_path / "back.h5"))
    assert code == 0, err
    np.testing.assert_array_equal(
        load_dataset(tmp_path / "back.h5")[0].step_tasks, ds[0].step_tasks
    )


def test_import_reads_task_index_per_frame_of_lerobot_v3_and_v21(tmp_path):
    # v3.0 written by LeRobot 0.4.4, episode 0's frames 3.. relabelled with the other task
    root = tmp_path / "v3"
    shutil.copytree(LEROBOT / "v30_image", root)
    file = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(file)
    ti = np.asarray(table.column("task_index"))
    ep = np.asarray(table.column("episode_index"))
    changed = ti.copy()
    changed[np.flatnonzero(ep == 0)[3:]] = 1
    i = table.column_names.index("task_index")
    pq.write_table(table.set_column(i, "task_index", pa.array(changed)), file)
    ds = import_lerobot(root, image_keys=[])
    assert ds[0].instruction == "pick up the cube"
    assert ds[0].step_tasks.tolist() == ["pick up the cube"] * 3 + ["push the cube left"] * 3
    assert all(t.step_tasks is None for t in ds.trajectories[1:])

    root2 = tmp_path / "v2"
    write_lerobot(root2, video=False)
    f0 = root2 / "data/chunk-000/episode_000000.parquet"
    t0 = pq.read_table(f0)
    j = t0.column_names.index("task_index")
    pq.write_table(t0.set_column(j, "task_index", pa.array(np.array([0, 0, 0, 1, 1, 1]))), f0)
    ds2 = import_lerobot(root2)
    assert ds2[0].step_tasks.tolist() == ["pick up the cube"] * 3 + ["open the drawer"] * 3


# --------------------------------------------------------------------------- stats and names


def test_stats_of_lerobots_own_fixture_equal_the_stats_lerobot_wrote():
    """lerobot 0.4.4 recorded v30_image and wrote its meta/stats.json; the same statistics
    computed from its frames here agree (image std aside: LeRobot squares uint8 pixels in
    uint8, which wraps)."""
    root = LEROBOT / "v30_image"
    frames = _frames(root)
    info = json.loads((root / "meta/info.json").read_text())
    ref = json.loads((root / "meta/stats.json").read_text())
    ep = frames["episode_index"]
    for name, feat in info["features"].items():
        image = feat["dtype"] == "image"
        per_ep = [lerobot_stats.feature_stats(frames[name][ep == e], image) for e in np.unique(ep)]
        mine = lerobot_stats.to_json(lerobot_stats.aggregate(per_ep))
        assert set(mine) == set(ref[name])
        for stat, want in ref[name].items():
            if image and stat == "std":
                continue
            np.testing.assert_allclose(mine[stat], want, rtol=1e-6, atol=1e-12, err_msg=name)
        if image:  # the true per-channel std, where LeRobot's wrapped to below 0.01
            px = frames[name].reshape(-1, 3).astype(np.float64) / 255
            np.testing.assert_allclose(np.ravel(mine["std"]), px.std(0), rtol=1e-9)
            assert np.all(np.ravel(ref[name]["std"])[:2] < 0.01) and np.all(px.std(0) > 0.2)


def test_export_writes_stats_json_matching_the_frames_and_keeps_names(tmp_path, capsys):
    ds = import_lerobot(LEROBOT / "v30_image")
    save_dataset(ds, tmp_path / "d.h5")
    code, _, err = _cli(capsys, "export", str(tmp_path / "d.h5"), str(tmp_path / "lr"),
                        "--format", "lerobot")  # fmt: skip
    assert code == 0, err
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    feats = info["features"]
    assert feats["observation.state"]["names"] == ["x", "y", "z", "g"]
    assert feats["action"]["names"] == ["dx", "dy", "dz"]
    stats = json.loads((tmp_path / "lr/meta/stats.json").read_text())
    frames = _frames(tmp_path / "lr")
    assert set(stats) == set(feats)
    for name, values in frames.items():
        s = stats[name]
        if feats[name]["dtype"] == "image":
            px = values.astype(np.float64).reshape(-1, 3) / 255
            np.testing.assert_allclose(np.ravel(s["mean"]), px.mean(0), rtol=1e-9)
            np.testing.assert_allclose(np.ravel(s["std"]), px.std(0), rtol=1e-6)
            np.testing.assert_allclose(np.ravel(s["min"]), px.min(0))
            np.testing.assert_allclose(np.ravel(s["max"]), px.max(0))
            assert np.shape(s["mean"]) == (3, 1, 1) and s["count"] == [len(values)]
            continue
        v = values.reshape(len(values), -1).astype(np.float64)
        np.testing.assert_allclose(s["mean"], v.mean(0), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(s["std"], v.std(0), rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(s["min"], v.min(0), err_msg=name)
        np.testing.assert_allclose(s["max"], v.max(0), err_msg=name)
        assert s["count"] == [len(values)]
        # quantiles: count-weighted means of each episode's histogram quantiles
        for q in ("q01", "q50", "q99"):
            assert np.all(np.asarray(s[q]) >= v.min(0) - 1e-6)
            assert np.all(np.asarray(s[q]) <= v.max(0) + 1e-6)
    # the same statistics LeRobot wrote for the frames it recorded (image std aside)
    ref = json.loads((LEROBOT / "v30_image/meta/stats.json").read_text())
    for name in ("observation.state", "action", "next.reward", "next.done", "timestamp"):
        for stat in ("min", "max", "mean", "std", "count", "q01", "q50", "q99"):
            np.testing.assert_allclose(stats[name][stat], ref[name][stat], rtol=1e-6, atol=1e-9)
    # per-episode statistics in meta/episodes, as LeRobot stores them
    episodes = pq.read_table(tmp_path / "lr/meta/episodes/chunk-000/file-000.parquet")
    lengths = episodes.column("length").to_pylist()
    assert episodes.column("stats/action/count").to_pylist() == [[n] for n in lengths]
    # names come back on import
    back = import_lerobot(tmp_path / "lr", image_keys=[])
    assert back.metadata["feature_names"]["observation.state"] == ["x", "y", "z", "g"]


def test_state_keys_fold_names(tmp_path):
    root = tmp_path / "v2"
    write_lerobot(root, video=False)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.state"]["names"] = ["a", "b", "c", "d"]
    info["features"]["action"]["names"] = ["u", "v"]
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = import_lerobot(root, state_keys=["observation.state"])
    assert ds.metadata["feature_names"] == {
        "observation.state": ["a", "b", "c", "d"],
        "action": ["u", "v"],
    }


# --------------------------------------------------------------------------- rewards


def test_rewardless_source_exports_no_reward_column(tmp_path, capsys):
    ds = _two_task_dataset(rewards=False)
    save_dataset(ds, tmp_path / "d.h5")
    code, _, err = _cli(capsys, "export", str(tmp_path / "d.h5"), str(tmp_path / "lr"),
                        "--format", "lerobot")  # fmt: skip
    assert code == 0, err
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert "next.reward" not in info["features"]
    schema = pq.read_schema(tmp_path / "lr/data/chunk-000/file-000.parquet")
    assert not any("reward" in n for n in schema.names)
    assert "next.reward" not in json.loads((tmp_path / "lr/meta/stats.json").read_text())
    back = import_lerobot(tmp_path / "lr")
    assert back.metadata["rewards_recorded"] is False


def _reward_checkpoint(path: Path, obs_dim: int = 9, act_dim: int = 2):
    import torch

    from robopref.rewards.models import MLPReward, save_reward

    torch.manual_seed(0)
    model = MLPReward(obs_dim, act_dim, hidden=(8,))
    save_reward(model, path)
    return model


def test_export_reward_writes_learned_reward_and_keeps_the_original(tmp_path, capsys):
    ds = _two_task_dataset()
    save_dataset(ds, tmp_path / "d.h5")
    model = _reward_checkpoint(tmp_path / "r.pt")
    code, out, err = _cli(capsys, "export", str(tmp_path / "d.h5"), str(tmp_path / "lr"),
                          "--format", "lerobot", "--reward", str(tmp_path / "r.pt"))  # fmt: skip
    assert code == 0, err
    frames = _frames(tmp_path / "lr")
    ep = frames["episode_index"]
    for e, t in enumerate(ds):
        learned = model.predict(t.state, t.actions)
        np.testing.assert_allclose(frames["next.reward"][ep == e], learned, rtol=1e-6)
        assert not np.allclose(learned, t.rewards)
        np.testing.assert_array_equal(frames["next.original_reward"][ep == e], t.rewards)
    meta = json.loads((tmp_path / "lr/meta/robopref.json").read_text())
    source = meta["dataset"]["reward_source"]
    assert source["model_class"] == "MLPReward" and source["checkpoint"].endswith("r.pt")
    back = import_lerobot(tmp_path / "lr")
    np.testing.assert_array_equal(back[1].extras["original_rewards"], ds[1].rewards)

    # robomimic: the learned reward as rewards, the recorded one beside it
    code, _, err = _cli(capsys, "export", str(tmp_path / "d.h5"), str(tmp_path / "r.hdf5"),
                        "--format", "robomimic", "--reward", str(tmp_path / "r.pt"))  # fmt: skip
    assert code == 0, err
    with h5py.File(tmp_path / "r.hdf5", "r") as f:
        np.testing.assert_allclose(
            f["data/demo_2/rewards"][()], model.predict(ds[2].state, ds[2].actions), rtol=1e-6
        )
        np.testing.assert_array_equal(f["data/demo_2/extras/original_rewards"][()], ds[2].rewards)
    assert load_dataset(tmp_path / "r.hdf5").metadata["reward_source"]["kind"] == "learned"


def test_export_reward_on_a_rewardless_source_writes_only_the_learned_reward(tmp_path, capsys):
    save_dataset(_two_task_dataset(rewards=False), tmp_path / "d.h5")
    _reward_checkpoint(tmp_path / "r.pt")
    code, _, err = _cli(capsys, "export", str(tmp_path / "d.h5"), str(tmp_path / "lr"),
                        "--format", "lerobot", "--reward", str(tmp_path / "r.pt"))  # fmt: skip
    assert code == 0, err
    feats = json.loads((tmp_path / "lr/meta/info.json").read_text())["features"]
    assert "next.reward" in feats and "next.original_reward" not in feats


@pytest.mark.parametrize("bad", ["obs_dim", "not_a_checkpoint", "missing"])
def test_bad_reward_checkpoint_is_one_line_and_nothing_written(tmp_path, capsys, bad):
    save_dataset(_two_task_dataset(), tmp_path / "d.h5")
    ckpt = tmp_path / "r.pt"
    if bad == "obs_dim":
        _reward_checkpoint(ckpt, obs_dim=39)
    elif bad == "not_a_checkpoint":
        ckpt.write_text("hello")
    code, out, err = _cli(capsys, "export", str(tmp_path / "d.h5"), str(tmp_path / "lr"),
                          "--format", "lerobot", "--reward", str(ckpt))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("robopref: ") and str(ckpt) in err
    expected = {
        "obs_dim": "expected observations 'state' of size 39",
        "not_a_checkpoint": "expected a reward checkpoint",
        "missing": "expected a reward checkpoint file, found nothing",
    }[bad]
    assert expected in err
    assert not (tmp_path / "lr").exists()
