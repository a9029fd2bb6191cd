"""Malformed, truncated and corrupt files raise DataValidationError naming the file and field."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from data_factories import graded_queries, image_dataset, soft_queries, vector_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from robopref.data import (
    DataValidationError,
    PreferenceQueries,
    Trajectory,
    TrajectoryDataset,
    load_dataset,
    load_queries,
    save_dataset,
)

N = 3  # demos per file: the majority of them defines the expected shapes


def _file_bytes(kind: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.h5"
        ds = vector_dataset(n=N) if kind == "vector" else image_dataset(n=N)
        ds.queries = graded_queries(ds) if kind == "vector" else soft_queries()
        save_dataset(ds, path)
        return path.read_bytes()


VALID = {kind: _file_bytes(kind) for kind in ("vector", "image")}


def _replace(g: h5py.Group, name: str, arr) -> None:
    del g[name]
    g[name] = arr


# Each mutation edits an open file (r+) for demo ``i`` and returns the text the error must name.
def drop(field):
    def m(f, i):
        del f[f"data/demo_{i}/{field}"]
        return (
            f"data/demo_{i}/{field}"
            if field != "obs/state" or "image" in f["data/demo_0/obs"]
            else f"data/demo_{i}/obs"
        )

    return m


def shorten(field):
    def m(f, i):
        g = f[f"data/demo_{i}"]
        _replace(g, field, g[field][()][:-1])
        return f"data/demo_{i}/{field}"

    return m


def lengthen(field):
    def m(f, i):
        g = f[f"data/demo_{i}"]
        a = g[field][()]
        _replace(g, field, np.concatenate([a, a[-1:]]))
        return f"data/demo_{i}/{field}"

    return m


def add_axis(field):
    def m(f, i):
        g = f[f"data/demo_{i}"]
        _replace(g, field, g[field][()][..., None])
        return f"data/demo_{i}/{field}"

    return m


def to_strings(field):
    def m(f, i):
        g = f[f"data/demo_{i}"]
        a = g[field][()]
        _replace(g, field, np.full(a.shape, "x", dtype=h5py.string_dtype()))
        return f"data/demo_{i}/{field}"

    return m


def poison(field):
    """NaN in a float field, the value 2 in a 0/1 flag field."""

    def m(f, i):
        g = f[f"data/demo_{i}"]
        a = g[field][()]
        flat = a.reshape(-1).copy()
        flat[len(flat) // 2] = np.nan if a.dtype.kind == "f" else 2
        _replace(g, field, flat.reshape(a.shape).astype(a.dtype))
        return f"data/demo_{i}/{field}"

    return m


def extra_column(f, i):
    g = f[f"data/demo_{i}"]
    a = g["actions"][()]
    _replace(g, "actions", np.concatenate([a, a[:, :1]], 1))
    return f"data/demo_{i}/actions"


def bad_num_samples(f, i):
    f[f"data/demo_{i}"].attrs["num_samples"] = 999
    return f"data/demo_{i}.attrs['num_samples']"


def bad_total(f, i):
    f["data"].attrs["total"] = int(f["data"].attrs["total"]) + 1
    return "data.attrs['total']"


def bad_json(f, i):
    f[f"data/demo_{i}"].attrs["metadata"] = "{not json"
    return f"data/demo_{i}.attrs['metadata']"


def rename_demo(f, i):
    f.move(f"data/demo_{i}", "data/episode_x")
    return "data/episode_x"


def drop_data(f, i):
    del f["data"]
    return "data"


def drop_obs_group(f, i):
    del f[f"data/demo_{i}/obs"]
    return f"data/demo_{i}/obs"


def query_index_out_of_range(f, i):
    a = f["preferences/traj_index"][()]
    a[i % len(a), 0] = N + 2
    f["preferences/traj_index"][...] = a
    return "preferences: field 'traj_index': expected indices in [0, 3)"


def query_past_end(f, i):
    a = f["preferences/start"][()]
    a[i % len(a), 1] = 100
    f["preferences/start"][...] = a
    return "preferences: field 'start/length'"


def query_bad_label(f, i):
    lab = f["preferences/labels"][()]
    lab[i % len(lab), 0] = np.nan
    f["preferences/labels"][...] = lab
    return "preferences: field 'labels'"


def query_bad_confidence(f, i):
    c = f["preferences/confidence"][()]
    c[i % len(c)] = 1.5
    f["preferences/confidence"][...] = c
    return "preferences: field 'confidence'"


def query_mask_shape(f, i):
    m = f["preferences/mask"][()]
    _replace(f["preferences"], "mask", np.ones((m.shape[0], m.shape[1] + 1), np.uint8))
    return "preferences/mask: expected [Q=3, K="


def query_drop(field):
    def m(f, i):
        del f[f"preferences/{field}"]
        return f"preferences/{field}"

    return m


def query_label_kind(f, i):
    f["preferences"].attrs["label_kind"] = "bogus"
    return "preferences: field 'label_kind'"


FIELDS = ("actions", "rewards", "dones", "successes", "obs/state")
BOTH, IMAGE = ("vector", "image"), ("image",)
MUTATIONS = [
    *(
        (make(field), BOTH)
        for make in (drop, shorten, lengthen, add_axis, to_strings, poison)
        for field in FIELDS
    ),
    *((make("obs/image"), IMAGE) for make in (drop, shorten, add_axis, to_strings)),
    *(
        (m, BOTH)
        for m in (
            extra_column,
            bad_num_samples,
            bad_total,
            bad_json,
            rename_demo,
            drop_data,
            drop_obs_group,
        )
    ),
    *(
        (m, BOTH)
        for m in (query_index_out_of_range, query_past_end, query_bad_label, query_bad_confidence)
    ),
    *(
        (m, BOTH)
        for m in (
            query_mask_shape,
            query_label_kind,
            query_drop("labels"),
            query_drop("confidence"),
        )
    ),
]


def _mutated(kind: str, mutation, i: int, d: str) -> tuple[Path, str]:
    path = Path(d) / "data.h5"
    path.write_bytes(VALID[kind])
    with h5py.File(path, "r+") as f:
        expected = mutation(f, i)
    return path, expected


@settings(max_examples=150, deadline=None)
@given(mutation=st.sampled_from(MUTATIONS), kind=st.sampled_from(BOTH), i=st.integers(0, N - 1))
def test_mutated_file_raises_naming_the_field(mutation, kind, i):
    mutate, kinds = mutation
    kind = kind if kind in kinds else kinds[0]
    with tempfile.TemporaryDirectory() as d:
        path, expected = _mutated(kind, mutate, i, d)
        with pytest.raises(DataValidationError) as err:
            load_dataset(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, (expected, msg)
    assert "expected" in msg and "found" in msg, msg


def test_every_mutation_is_exercised():
    """The hypothesis test draws from MUTATIONS; run each once deterministically as well."""
    for mutate, kinds in MUTATIONS:
        for kind in kinds:
            with tempfile.TemporaryDirectory() as d:
                path, expected = _mutated(kind, mutate, 1, d)
                with pytest.raises(DataValidationError, match=re.escape(expected)):
                    load_dataset(path)


def test_message_gives_expected_and_found_shapes(tmp_path):
    path, _ = _mutated("vector", shorten("actions"), 1, tmp_path)
    with pytest.raises(DataValidationError) as err:
        load_dataset(path)
    assert str(err.value) == (
        f"{path}: data/demo_1/actions: expected [T=13, act_dim] numeric, found shape (12, 3) float32"
    )
    path, _ = _mutated("vector", extra_column, 0, tmp_path)
    with pytest.raises(
        DataValidationError,
        match=re.escape(
            "data/demo_0/actions: expected [T=12, 3] as in the other demos, found shape (12, 4) float32"
        ),
    ):
        load_dataset(path)
    path, _ = _mutated("vector", poison("actions"), 2, tmp_path)
    with pytest.raises(
        DataValidationError,
        match=re.escape("data/demo_2/actions: expected finite values, found 1 NaN/inf"),
    ):
        load_dataset(path)
    path, _ = _mutated("vector", to_strings("rewards"), 0, tmp_path)
    with pytest.raises(
        DataValidationError,
        match=re.escape("data/demo_0/rewards: expected [T=12] numeric, found shape (12,) object"),
    ):
        load_dataset(path)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["vector", "image"]), cut=st.floats(0.0, 0.999))
def test_truncated_file_raises(kind, cut):
    data = VALID[kind]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cut.h5"
        path.write_bytes(data[: int(cut * len(data))])
        with pytest.raises(DataValidationError, match=re.escape(f"{path}: /: expected ")):
            load_dataset(path)
        with pytest.raises(DataValidationError, match=re.escape(f"{path}: ")):
            load_queries(path)


def test_non_hdf5_missing_and_directory_paths(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("robot data, honest\n" * 100)
    with pytest.raises(
        DataValidationError,
        match=r"notes.h5: /: expected an HDF5 file, found a file without the HDF5 signature",
    ):
        load_dataset(p)
    with pytest.raises(DataValidationError, match=r"missing.h5: file not found"):
        load_dataset(tmp_path / "missing.h5")
    with pytest.raises(DataValidationError, match="found a directory"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("kind", "field"),
    [("vector", "actions"), ("image", "obs/image"), ("vector", "preferences/labels")],
)
def test_flipped_byte_fails_the_checksum(tmp_path, kind, field):
    path = tmp_path / "flip.h5"
    path.write_bytes(VALID[kind])
    name = field if field.startswith("preferences") else f"data/demo_1/{field}"
    with h5py.File(path) as f:
        info = f[name].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(
        DataValidationError,
        match=re.escape(f"{path}: {name}: expected readable data, found a truncated or corrupt"),
    ):
        load_dataset(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "v.h5"
    path.write_bytes(VALID["vector"])
    with h5py.File(path, "r+") as f:
        f.attrs["robopref_format_version"] = 99
    with pytest.raises(
        DataValidationError, match=r"robopref_format_version'\]: expected <= 1, found 99"
    ):
        load_dataset(path)


# --------------------------------------------------------------------- in memory, before saving


def _ds(**changes):
    rng = np.random.default_rng(0)
    trajs = [
        Trajectory(rng.normal(size=(6, 3)), rng.normal(size=(6, 2)), rng.normal(size=6))
        for _ in range(3)
    ]
    for name, (i, value) in changes.items():
        if name == "observations":
            trajs[i] = Trajectory(value, trajs[i].actions, trajs[i].rewards)
        else:
            setattr(trajs[i], name, value)
    return TrajectoryDataset(trajs)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"actions": (1, np.full((6, 2), np.nan))},
            r"trajectory 1: field 'actions': expected finite values, found 12 NaN/inf",
        ),
        (
            {"rewards": (2, np.r_[np.inf, np.zeros(5)])},
            r"trajectory 2: field 'rewards': expected finite values, found 1",
        ),
        (
            {"actions": (2, np.zeros((6, 3)))},
            r"trajectory 2: field 'actions': expected per-step shape \(2,\) as in trajectory 0, found shape \(6, 3\)",
        ),
        (
            {"actions": (0, np.zeros((6, 2), dtype=bool))},
            r"trajectory 0: field 'actions': expected a numeric dtype, found dtype bool",
        ),
        (
            {"observations": (1, {"state": np.zeros((6, 3))})},
            r"trajectory 1: field 'observations': expected array observations",
        ),
        (
            {"rewards": (0, np.zeros(5))},
            r"trajectory 0: field 'rewards': expected shape \(6,\), found shape \(5,\)",
        ),
    ],
)
def test_save_refuses_inconsistent_datasets(tmp_path, changes, match):
    with pytest.raises(DataValidationError, match=r"save_dataset\(.*bad.h5\): " + match):
        save_dataset(_ds(**changes), tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_save_refuses_bad_obs_keys_queries_and_filter_keys(tmp_path):
    ds = image_dataset()
    for t in ds:
        t.observations["a/b"] = t.observations.pop("state")
    with pytest.raises(
        DataValidationError,
        match=r"field 'observations': expected keys that are non-empty strings without '/', found 'a/b'",
    ):
        save_dataset(ds, tmp_path / "x.h5")
    ds = vector_dataset()
    ds.queries = PreferenceQueries(np.array([[0, 5]]), np.array([[0, 0]]), 3)
    with pytest.raises(
        DataValidationError,
        match=r"queries: field 'traj_index': expected indices in \[0, 3\), found range \[0, 5\]",
    ):
        save_dataset(ds, tmp_path / "x.h5")
    ds.queries = None
    ds.metadata["filter_keys"] = {"train": [0, 7]}
    with pytest.raises(
        DataValidationError,
        match=r"metadata\['filter_keys'\]\['train'\]: expected a list of trajectory indices in \[0, 3\)",
    ):
        save_dataset(ds, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
