"""Importers: exact round trips of robomimic HDF5 files and LeRobot v2.1 folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from robopref.data import DataValidationError, load_dataset, save_dataset
from robopref.data.importers import (
    detect_format,
    import_dataset,
    import_lerobot,
    import_robomimic,
)

sys.path.insert(0, str(Path(__file__).parent))
from lerobot_factory import write_lerobot, write_robomimic, write_video  # noqa: E402

pa = pytest.importorskip("pyarrow", reason="LeRobot import needs pyarrow")


# --------------------------------------------------------------------------- robomimic


def test_robomimic_round_trip_exact(tmp_path):
    path = tmp_path / "lift.hdf5"
    written = write_robomimic(path)
    ds = import_robomimic(path)
    assert [t.metadata["demo"] for t in ds] == ["demo_0", "demo_2", "demo_10"]  # numeric order
    assert [len(t) for t in ds] == [5, 7, 4]
    for t in ds:
        w = written[t.metadata["demo"]]
        assert set(t.observations) == {"robot0_eef_pos", "object", "agentview_image"}
        for key in t.observations:
            np.testing.assert_array_equal(t.observations[key], w[f"obs/{key}"])
            assert t.observations[key].dtype == w[f"obs/{key}"].dtype
        np.testing.assert_array_equal(t.actions, w["actions"])
        np.testing.assert_array_equal(t.rewards, w["rewards"])
        np.testing.assert_array_equal(t.dones, w["dones"].astype(bool))
        assert t.task == "Lift" and not t.successes.any()
        assert t.metadata["successes_recorded"] is False
    assert ds.metadata["env_args"]["env_kwargs"] == {"control_freq": 20}
    assert ds.metadata["filter_keys"] == {"train": [0, 1], "valid": [2]}
    # and through robopref's own file format, unchanged
    save_dataset(ds, tmp_path / "out.h5")
    back = load_dataset(tmp_path / "out.h5")
    for a, b in zip(ds, back):
        np.testing.assert_array_equal(
            a.observations["agentview_image"], b.observations["agentview_image"]
        )
        np.testing.assert_array_equal(a.actions, b.actions)
    assert back.metadata["filter_keys"] == {"train": [0, 1], "valid": [2]}
    # robopref's own files are robomimic files too (successes come back)
    again = import_robomimic(tmp_path / "out.h5", filter_key="valid")
    assert len(again) == 1 and again[0].metadata == {"demo": "demo_2"}
    np.testing.assert_array_equal(again[0].observations["object"], ds[2].observations["object"])


def test_robomimic_filter_key_obs_keys_and_state_keys(tmp_path):
    path = tmp_path / "lift.hdf5"
    written = write_robomimic(path)
    train = import_robomimic(path, filter_key="train")
    assert [t.metadata["demo"] for t in train] == ["demo_0", "demo_2"]  # sorted, not mask order
    assert train.metadata["filter_keys"] == {"train": [0, 1], "valid": []}
    valid = import_robomimic(path, obs_keys=["object"], filter_key="valid")
    assert [t.metadata["demo"] for t in valid] == ["demo_10"]
    assert set(valid[0].observations) == {"object"}
    st = import_robomimic(
        path, obs_keys=["agentview_image"], state_keys=["robot0_eef_pos", "object"]
    )
    w = written["demo_2"]
    expected = np.concatenate([w["obs/robot0_eef_pos"], w["obs/object"]], axis=1)
    np.testing.assert_array_equal(st[1].state, expected)
    assert st[1].state.shape == (7, 13)
    assert set(st[1].observations) == {"state", "agentview_image"}
    only_state = import_robomimic(path, obs_keys=[], state_keys=["robot0_eef_pos"])
    assert isinstance(only_state[0].observations, np.ndarray)  # "state" alone -> array
    no_reward = import_robomimic(path, reward_key=None)
    assert no_reward.metadata["rewards_recorded"] is False and not no_reward[0].rewards.any()


def test_robomimic_errors_name_file_field_and_shape(tmp_path):
    path = tmp_path / "lift.hdf5"
    write_robomimic(path)
    with pytest.raises(
        DataValidationError,
        match=r"lift.hdf5: mask/test: expected one of the filter keys \['train', 'valid'\]",
    ):
        import_robomimic(path, filter_key="test")
    with pytest.raises(
        DataValidationError, match=r"data/demo_0/obs/eye_in_hand: expected an observation"
    ):
        import_robomimic(path, obs_keys=["eye_in_hand"])
    with h5py.File(path, "a") as f:
        del f["data/demo_2/rewards"]
        f["data/demo_2/rewards"] = np.zeros(6)
    with pytest.raises(
        DataValidationError,
        match=r"lift.hdf5: data/demo_2/rewards: expected \[T=7\] \(T from actions\), found shape \(6,\)",
    ):
        import_robomimic(path)
    with h5py.File(path, "a") as f:
        del f["data/demo_2/rewards"]
        f["data/demo_2/rewards"] = np.zeros(7)
        f["data/demo_2/dones"][3] = 2
    with pytest.raises(
        DataValidationError,
        match=r"data/demo_2/dones: expected values 0 or 1, found value 2 at step 3",
    ):
        import_robomimic(path)
    with pytest.raises(DataValidationError, match="expected an HDF5 file"):
        (tmp_path / "x.hdf5").write_text("nope")
        import_robomimic(tmp_path / "x.hdf5")


# --------------------------------------------------------------------------- LeRobot


@pytest.fixture
def lerobot(tmp_path):
    pytest.importorskip("av", reason="LeRobot videos need av (PyAV)")
    root = tmp_path / "so100_pick"
    return root, write_lerobot(root)


def test_lerobot_round_trip_exact_with_lossless_video(lerobot):
    root, episodes = lerobot
    ds = import_lerobot(root)
    assert len(ds) == 3 and [len(t) for t in ds] == [6, 4, 5]
    for t, ep in zip(ds, episodes):
        assert set(t.observations) == {"state", "images.top"}
        np.testing.assert_array_equal(t.observations["state"], ep["state"])
        assert t.observations["state"].dtype == np.float32
        frames = t.observations["images.top"]
        assert frames.dtype == np.uint8 and frames.shape == ep["frames"].shape
        np.testing.assert_array_equal(frames, ep["frames"])  # lossless H.264 RGB
        np.testing.assert_array_equal(t.actions, ep["action"])
        np.testing.assert_array_equal(t.rewards, ep["reward"].astype(np.float64))
        np.testing.assert_array_equal(t.dones, ep["done"])
        assert t.task == t.instruction == ep["task"]
    assert [t.metadata["episode_index"] for t in ds] == [0, 1, 2]
    m = ds.metadata
    assert m["fps"] == 10.0 and m["robot_type"] == "so100" and m["codebase_version"] == "v2.1"
    assert m["obs_features"] == {
        "state": "observation.state",
        "images.top": "observation.images.top",
    }
    assert m["filter_keys"] == {"train": [0, 1], "valid": [2]}
    sub = import_lerobot(root, episodes=[2], decode_videos=False)
    assert len(sub) == 1 and isinstance(sub[0].observations, np.ndarray)  # state only -> array
    np.testing.assert_array_equal(sub[0].observations, episodes[2]["state"])
    assert sub.metadata["filter_keys"] == {"train": [], "valid": [0]}
    # save / load in robopref's HDF5 keeps everything
    save_dataset(ds, root.parent / "so100.h5")
    back = load_dataset(root.parent / "so100.h5")
    np.testing.assert_array_equal(back[1].observations["images.top"], episodes[1]["frames"])
    assert back.metadata["fps"] == 10.0


def test_lerobot_av1_video_frames_aligned(tmp_path):
    """LeRobot's default codec (AV1, lossy): each frame is a flat grey level 20 * t, so the
    decoded frames must come back in order within a few grey levels."""
    pytest.importorskip("av")
    root = tmp_path / "av1"
    episodes = write_lerobot(root, lengths=(8,), video=True, codec="libsvtav1", hw=(64, 64))
    grey = (20 * np.arange(8, dtype=np.uint8))[:, None, None, None]
    frames = np.broadcast_to(grey, (8, 64, 64, 3)).copy()
    vfile = root / "videos/chunk-000/observation.images.top/episode_000000.mp4"
    write_video(vfile, frames, 10, codec="libsvtav1")
    ds = import_lerobot(root)
    got = ds[0].observations["images.top"].astype(float).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got, 20 * np.arange(8), atol=3)
    assert episodes[0]["state"].shape == (8, 4)


def test_lerobot_errors_name_file_field_and_shape(lerobot):
    root, _ = lerobot
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.state"]["shape"] = [5]
    info_path.write_text(json.dumps(info))
    with pytest.raises(
        DataValidationError,
        match=r"episode_000000.parquet: observation.state: expected \[T=6, 5\] \(info.json shape\), found shape \(6, 4\)",
    ):
        import_lerobot(root)
    info["features"]["observation.state"]["shape"] = [4]
    info_path.write_text(json.dumps(info))
    (root / "videos/chunk-001/observation.images.top/episode_000002.mp4").unlink()
    with pytest.raises(
        DataValidationError, match=r"episode_000002.mp4: /: expected the video of this episode"
    ):
        import_lerobot(root)
    assert len(import_lerobot(root, episodes=[0, 1])) == 2
    short = root / "videos/chunk-000/observation.images.top/episode_000001.mp4"
    write_video(short, np.zeros((3, 16, 16, 3), np.uint8), 10)  # 3 frames for 4 rows
    with pytest.raises(
        DataValidationError,
        match=r"episode_000001.mp4: frames: expected a frame within 0.0001 s of every row's "
        r"timestamp, found row 3 at 0.3000 s, nearest frame at 0.2000 s \(3 frames\)",
    ):
        import_lerobot(root, episodes=[1])
    with pytest.raises(DataValidationError, match=r"episode 7: expected an episode listed there"):
        import_lerobot(root, episodes=[7])
    with pytest.raises(
        DataValidationError, match=r"features\['reward'\]: expected the reward feature"
    ):
        import_lerobot(root, reward_key="reward")
    info["codebase_version"] = "v4.0"
    info_path.write_text(json.dumps(info))
    with pytest.raises(
        DataValidationError, match=r"codebase_version: expected 'v2.0', 'v2.1' or 'v3.0'"
    ):
        import_lerobot(root)
    # a v2 layout labelled v3.0: the v3.0 reader names what it misses
    info["codebase_version"] = "v3.0"
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataValidationError, match=r"meta/episodes: .*found no file"):
        import_lerobot(root)


def test_import_dataset_detects_the_format(tmp_path):
    write_robomimic(tmp_path / "a.hdf5", image=False)
    write_lerobot(tmp_path / "b", video=False)
    assert detect_format(tmp_path / "a.hdf5") == "robomimic"
    assert detect_format(tmp_path / "b") == "lerobot"
    assert import_dataset(tmp_path / "a.hdf5").metadata["source_format"] == "robomimic"
    assert import_dataset(tmp_path / "b", format="lerobot").metadata["source_format"] == "lerobot"
    with pytest.raises(DataValidationError, match="expected a LeRobot folder"):
        import_dataset(tmp_path)
    with pytest.raises(DataValidationError, match="field 'format'"):
        import_dataset(tmp_path / "b", format="rlds")


def test_lerobot_image_features_stored_in_parquet(tmp_path):
    """dtype "image" features: PNG bytes in a struct {bytes, path} column, decoded exactly."""
    Image = pytest.importorskip("PIL.Image")
    import io

    import pyarrow.parquet as pq

    root = tmp_path / "img"
    write_lerobot(root, lengths=(3,), video=False)
    frames = np.random.default_rng(5).integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
    cells = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    file = root / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(file)
    col = pa.array(cells, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(table.append_column("observation.images.wrist", col), file)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.wrist"] = {"dtype": "image", "shape": [6, 5, 3]}
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = import_lerobot(root)
    np.testing.assert_array_equal(ds[0].observations["images.wrist"], frames)
    assert set(ds[0].observations) == {"state", "images.wrist"}
