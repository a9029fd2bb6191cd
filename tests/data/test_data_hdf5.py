"""HDF5 storage: exact round trips, the robomimic layout, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from data_factories import (
    assert_same_dataset,
    assert_same_queries,
    graded_queries,
    image_dataset,
    soft_queries,
    vector_dataset,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robopref.data.hdf5 as hdf5
from robopref.data import (
    DataValidationError,
    Trajectory,
    TrajectoryDataset,
    load_dataset,
    load_queries,
    sample_queries,
    save_dataset,
    save_queries,
)


def test_round_trip_vector_observations_with_graded_queries(tmp_path):
    ds = vector_dataset()
    ds.queries = graded_queries(ds)
    path = tmp_path / "data.h5"
    save_dataset(ds, path)
    back = load_dataset(path)
    assert_same_dataset(ds, back)
    assert isinstance(back[0].observations, np.ndarray)
    assert back[0].observations.dtype == np.float32 and back[2].observations.shape == (14, 5)
    assert back[0].metadata == {"mode": "expert", "seed": 0, "noise": 0.0, "none": None}
    assert back.queries.mask[2].tolist() == [True, True, False]
    assert back.queries.confidence.tolist() == [1.0, 0.5, 0.25]
    assert_same_queries(load_queries(path), ds.queries)


def test_round_trip_dict_observations_with_images_is_exact_and_compressed(tmp_path):
    ds = image_dataset()
    # keys in a non-alphabetical order: the order is kept
    path = tmp_path / "pix.hdf5"
    save_dataset(ds, path)
    back = load_dataset(path)
    assert_same_dataset(ds, back)
    assert list(back[0].observations) == ["state", "image", "gripper"]
    assert back[1].observations["gripper"].dtype == np.bool_
    with h5py.File(path) as f:
        img = f["data/demo_0/obs/image"]
        assert img.compression == "gzip" and img.chunks == (1, 8, 6, 3) and img.fletcher32
        assert f["data/demo_0/obs/state"].compression is None


def test_round_trip_soft_pair_queries(tmp_path):
    ds = vector_dataset()
    ds.queries = soft_queries()
    path = tmp_path / "soft.h5"
    save_dataset(ds, path)
    back = load_dataset(path)
    assert_same_dataset(ds, back)
    assert back.queries.labels[:, 0].tolist() == [0.9, 0.5, 0.125]
    assert back.queries.pair_probability().tolist() == [0.9, 0.5, 0.125]


def test_robomimic_attributes_and_layout(tmp_path):
    ds = vector_dataset(n=2, T=10)
    path = tmp_path / "d.h5"
    save_dataset(ds, path)
    with h5py.File(path) as f:
        data = f["data"]
        assert sorted(data) == ["demo_0", "demo_1"]
        assert int(data.attrs["total"]) == 10 + 11
        assert json.loads(data.attrs["env_args"]) == {"env_name": "", "type": 2, "env_kwargs": {}}
        assert int(data["demo_1"].attrs["num_samples"]) == 11
        assert data["demo_1"].attrs["obs_format"] == "array"
        assert set(data["demo_1"]) == {"obs", "actions", "rewards", "dones", "successes"}
        assert data["demo_0/dones"].dtype == np.uint8
        assert data["demo_0/dones"][()].tolist() == [0] * 9 + [1]
        assert data["demo_0/obs/state"].shape == (10, 5)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    obs_dim=st.integers(1, 4),
    act_dim=st.integers(1, 3),
    act_dtype=st.sampled_from([np.float32, np.float64, np.int16]),
    dict_obs=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(tmp_path, lengths, obs_dim, act_dim, act_dtype, dict_obs, seed):
    rng = np.random.default_rng(seed)
    trajs = []
    for T in lengths:
        state = rng.normal(size=(T, obs_dim)).astype(np.float32)
        obs = {"z": state, "a": rng.integers(0, 9, size=(T, 2, 2))} if dict_obs else state
        actions = (rng.normal(size=(T, act_dim)) * 10).astype(act_dtype)
        trajs.append(
            Trajectory(
                obs,
                actions,
                rng.normal(size=T),
                rng.random(T) < 0.5,
                rng.random(T) < 0.5,
                task=str(rng.integers(3)),
                metadata={"x": float(rng.normal())},
            )
        )
    ds = TrajectoryDataset(trajs, metadata={"seed": seed})
    path = tmp_path / f"p{seed}.h5"
    save_dataset(ds, path)
    assert_same_dataset(ds, load_dataset(path))


def test_numpy_values_in_metadata_are_stored_as_json_numbers(tmp_path):
    ds = vector_dataset(n=1)
    ds[0].metadata = {"rand_vec": np.array([0.5, 1.0]), "seed": np.int64(3)}
    save_dataset(ds, tmp_path / "m.h5")
    assert load_dataset(tmp_path / "m.h5")[0].metadata == {"rand_vec": [0.5, 1.0], "seed": 3}
    ds[0].metadata = {"bad": object()}
    with pytest.raises(
        DataValidationError, match=r"trajectory 0: metadata: expected JSON-serialisable"
    ):
        save_dataset(ds, tmp_path / "m2.h5")
    assert not (tmp_path / "m2.h5").exists()


def _robomimic_file(path, T=(5, 4, 3)):
    """A file laid out as robomimic writes it (dataset_states_to_obs.py), by hand."""
    rng = np.random.default_rng(0)
    names = ["demo_1", "demo_10", "demo_2"]  # robomimic sorts by the integer: 1, 2, 10
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = sum(T)
        data.attrs["env_args"] = json.dumps(
            {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}
        )
        for name, n in zip(names, T):
            g = data.create_group(name)
            g.attrs["num_samples"] = n
            g.attrs["model_file"] = "<mujoco/>"
            g["states"] = rng.normal(size=(n, 32))
            g["actions"] = rng.uniform(-1, 1, size=(n, 7))
            g["rewards"] = np.r_[np.zeros(n - 1), 1.0]
            g["dones"] = np.r_[np.zeros(n - 1, dtype=np.int64), 1]
            for obs in ("obs", "next_obs"):
                g[f"{obs}/robot0_eef_pos"] = rng.normal(size=(n, 3))
                g[f"{obs}/agentview_image"] = rng.integers(
                    0, 256, size=(n, 4, 4, 3), dtype=np.uint8
                )
                g[f"{obs}/object"] = rng.normal(size=(n, 10))
        f["mask/train"] = np.array([b"demo_1", b"demo_10"])
        f["mask/valid"] = np.array([b"demo_2"])


def test_loads_a_robomimic_file(tmp_path):
    path = tmp_path / "low_dim.hdf5"
    _robomimic_file(path)
    ds = load_dataset(path)
    assert [len(t) for t in ds] == [5, 3, 4]  # demo_1, demo_2, demo_10
    assert [t.metadata["demo"] for t in ds] == ["demo_1", "demo_2", "demo_10"]
    t = ds[0]
    assert sorted(t.observations) == ["agentview_image", "object", "robot0_eef_pos"]
    assert t.observations["agentview_image"].dtype == np.uint8 and t.actions.shape == (5, 7)
    assert t.task == "Lift" and t.dones.tolist() == [False] * 4 + [True]
    assert t.metadata["successes_recorded"] is False
    assert ds.metadata["env_args"]["env_kwargs"] == {"control_freq": 20}
    assert ds.metadata["source_format"] == "robomimic"
    assert ds.metadata["filter_keys"] == {"train": [0, 2], "valid": [1]}
    # labels can be added to the robomimic file in place (robomimic ignores /preferences)
    assert load_queries(path) is None
    ds.queries = sample_queries(ds, 4, k=2, segment_length=3, rng=np.random.default_rng(0))
    save_queries(path, ds.queries)
    labelled = load_dataset(path)
    assert_same_dataset(ds, labelled)
    with h5py.File(path) as f:
        assert f["data/demo_10/states"].shape == (4, 32) and "next_obs" in f["data/demo_1"]
    # it converts to our format losslessly
    save_dataset(ds, tmp_path / "ours.h5")
    back = load_dataset(tmp_path / "ours.h5")
    assert_same_dataset(ds, back)
    with h5py.File(tmp_path / "ours.h5") as f:
        assert f["mask/train"][()].tolist() == [b"demo_0", b"demo_2"]
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "Lift"


def test_single_state_key_of_a_foreign_file_loads_as_an_array(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["data/demo_0/obs/state"] = np.ones((3, 2), np.float32)
        f["data/demo_0/actions"] = np.ones((3, 1))
        f["data/demo_0/rewards"] = np.ones(3)
        f["data/demo_0/dones"] = np.array([0.0, 0.0, 1.0])  # float flags are accepted
    t = load_dataset(path)[0]
    assert isinstance(t.observations, np.ndarray) and t.observations.shape == (3, 2)
    assert t.dones.tolist() == [False, False, True]


def test_save_queries_adds_replaces_and_removes(tmp_path):
    ds = vector_dataset()
    path = tmp_path / "d.h5"
    save_dataset(ds, path)
    assert load_queries(path) is None
    q1 = graded_queries(ds)
    save_queries(path, q1)
    size1 = path.stat().st_size
    assert_same_queries(load_queries(path), q1)
    q2 = soft_queries()
    for _ in range(4):  # replacing does not grow the file (the old group is not left behind)
        save_queries(path, q2)
    assert path.stat().st_size < 1.1 * size1
    back = load_dataset(path)
    assert_same_queries(back.queries, q2)
    ds.queries = q2
    assert_same_dataset(ds, back)
    save_queries(path, None)
    assert load_dataset(path).queries is None
    bad = soft_queries()
    bad.start[0, 0] = 40
    with pytest.raises(DataValidationError, match=r"save_queries\(.*d.h5\): field 'start/length'"):
        save_queries(path, bad)


def _listdir(p):
    """The files in ``p``, less the writer locks ``.NAME.lock`` (empty, left on purpose)."""
    return sorted(x.name for x in p.iterdir() if not x.name.endswith(".lock"))


def test_save_dataset_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "d.h5"
    save_dataset(vector_dataset(n=2), path)
    before = path.read_bytes()
    calls = []
    real = hdf5._write_demo

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(hdf5, "_write_demo", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_dataset(vector_dataset(n=3, seed=5), path)
    assert path.read_bytes() == before
    assert _listdir(tmp_path) == ["d.h5"]
    calls.clear()
    with pytest.raises(RuntimeError):
        save_dataset(vector_dataset(n=3), tmp_path / "new.h5")
    assert _listdir(tmp_path) == ["d.h5"]


def test_save_queries_is_atomic(tmp_path, monkeypatch):
    ds = vector_dataset()
    ds.queries = graded_queries(ds)
    path = tmp_path / "d.h5"
    save_dataset(ds, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hdf5, "_write_queries", crash)
    with pytest.raises(KeyboardInterrupt):
        save_queries(path, soft_queries())
    assert path.read_bytes() == before
    assert _listdir(tmp_path) == ["d.h5"]
    monkeypatch.undo()
    assert_same_dataset(ds, load_dataset(path))


def test_empty_dataset_round_trips(tmp_path):
    save_dataset(TrajectoryDataset(), tmp_path / "e.h5")
    back = load_dataset(tmp_path / "e.h5")
    assert len(back) == 0 and back.queries is None and back.metadata == {}


def test_data_room_does_not_import_torch(tmp_path):
    code = (
        "import sys, numpy as np; from robopref.data import *; from robopref.data.summary import summarize;"
        f"d = load_dataset(r'{tmp_path / 'd.h5'}'); summarize(d);"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    save_dataset(vector_dataset(n=1), tmp_path / "d.h5")
    subprocess.run([sys.executable, "-c", code], check=True)
