"""robomimic HDF5 files: the reader (h5py only; robomimic itself is not needed) and the writer.

:func:`import_robomimic` reads a robomimic file (``data/demo_<N>/{obs/<key>, actions, rewards,
dones}``, ``data.attrs["env_args"]``, optional ``mask/<filter key>``). :func:`write_hdf5`
writes robopref's HDF5 file (robomimic's layout, see :mod:`robopref.data.hdf5`) under the
writer lock of its output, atomically and safely on a full disk; :func:`export_robomimic`
adds ``next_obs`` so that robomimic's ``SequenceDataset`` loads the result with its defaults.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robopref.data import hdf5
from robopref.data.formats._common import (
    PathLike,
    check_output,
    demo_names,
    describe,
    fail,
    flags,
    locked_output,
    new_hdf5_file,
    remove_stale_temporaries,
)
from robopref.data.trajectory import Trajectory, TrajectoryDataset

# --------------------------------------------------------------------------- reading


def import_robomimic(
    path: PathLike,
    obs_keys: Sequence[str] | None = None,
    reward_key: str | None = "rewards",
    *,
    filter_key: str | None = None,
    state_keys: Sequence[str] | None = None,
    task: str | None = None,
    image_keys: Sequence[str] | None = None,
) -> TrajectoryDataset:
    """Read a robomimic HDF5 dataset (h5py only; robomimic itself is not needed).

    Layout read::

        data/                 attrs: env_args (JSON: env_name, type, env_kwargs), total
        data/demo_<N>/        attrs: num_samples (T)
            obs/<key>         [T, ...] (low-dim float or uint8 images [T, H, W, 3])
            actions           [T, act_dim]
            rewards           [T]            (or ``reward_key``)
            dones             [T] 0/1        (optional: the last step is done)
            successes         [T] 0/1        (optional, written by robopref)
        mask/<filter key>     [n] byte strings "demo_<N>" (e.g. "train", "valid")

    ``next_obs`` and ``states`` are not read. Demos are returned sorted by N (robomimic's
    order), also when ``filter_key`` selects a subset.

    Args:
        path: the ``.hdf5`` file.
        obs_keys: observation keys to import (default: every key of ``obs/``).
        reward_key: dataset of each demo holding the per-step reward; ``None`` gives zero
            rewards and ``metadata["rewards_recorded"] = False``.
        filter_key: import only the demos listed in ``mask/<filter_key>``.
        state_keys: low-dim keys concatenated (in this order) into one ``"state"`` observation
            ``[T, sum of dims]`` (what the reward models read), replacing those keys. They need
            not be in ``obs_keys``.
        task: task name of every trajectory (default ``env_args["env_name"]``).
        image_keys: image observations (uint8 ``[T, H, W, C]``) to import; with ``obs_keys``
            None the low-dim keys are imported too. Default: as ``obs_keys`` says.

    Returns:
        A dataset with dict observations (array observations when ``"state"`` is the only
        key), ``metadata`` holding ``source_format = "robomimic"``, ``source``, ``env_args``,
        ``filter_keys`` (every mask, remapped to positions among the imported demos) and
        ``state_keys``; each trajectory's metadata holds its ``demo`` name.

    Raises:
        DataValidationError: naming the file, the HDF5 path and the expected vs found shape.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        fail(
            src,
            "/",
            "a robomimic HDF5 file",
            "nothing (missing)" if not path.exists() else "a directory",
        )
    if not h5py.is_hdf5(path):
        fail(src, "/", "an HDF5 file", "a file without the HDF5 signature")
    with h5py.File(path, "r") as f:
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            fail(
                src, "data", "a group of demos data/demo_<N>", f"{describe(data)}; keys {sorted(f)}"
            )
        env_args: dict[str, Any] = {}
        if "env_args" in data.attrs:
            raw = data.attrs["env_args"]
            try:
                env_args = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            except (TypeError, ValueError) as e:
                fail(src, "data.attrs['env_args']", "a JSON object", f"{str(raw)[:60]!r} ({e})")
            if not isinstance(env_args, dict):
                fail(src, "data.attrs['env_args']", "a JSON object", type(env_args).__name__)
        all_demos = demo_names(data)
        masks = _robomimic_masks(f, src, set(all_demos))
        if filter_key is not None:
            if filter_key not in masks:
                fail(
                    src,
                    f"mask/{filter_key}",
                    f"one of the filter keys {sorted(masks)}",
                    "nothing (missing)",
                )
            chosen = set(masks[filter_key])
            demos = [n for n in all_demos if n in chosen]
        else:
            demos = all_demos
        if image_keys is not None:
            obs_keys = _with_image_keys(f, src, all_demos, obs_keys, image_keys)
        task_name = str(env_args.get("env_name", "")) if task is None else task
        trajectories = [
            _robomimic_demo(data[n], f"data/{n}", src, obs_keys, reward_key, state_keys, task_name)
            for n in demos
        ]
    position = {n: i for i, n in enumerate(demos)}
    filter_keys = {
        name: [position[n] for n in sorted(names, key=lambda n: int(n[5:])) if n in position]
        for name, names in masks.items()
    }
    metadata: dict[str, Any] = {
        "source_format": "robomimic",
        "source": src,
        "env_args": env_args,
    }
    if filter_keys:
        metadata["filter_keys"] = filter_keys
    if filter_key is not None:
        metadata["filter_key"] = filter_key
    if state_keys:
        metadata["state_keys"] = list(state_keys)
    if reward_key is None:
        metadata["rewards_recorded"] = False
    out = TrajectoryDataset(trajectories, None, metadata)
    out.validate(src)
    return out


def _with_image_keys(
    f: h5py.File,
    src: str,
    demos: list[str],
    obs_keys: Sequence[str] | None,
    image_keys: Sequence[str],
) -> list[str]:
    """``obs_keys`` (default: the low-dim keys of the first demo) plus ``image_keys``, each
    checked to be a uint8 ``[T, H, W, C]`` observation of the first demo."""
    if not demos:
        return list(obs_keys or []) + list(image_keys)
    obs_g = f[f"data/{demos[0]}"].get("obs")
    if not isinstance(obs_g, h5py.Group):
        fail(src, f"data/{demos[0]}/obs", "a group of observation datasets", describe(obs_g))

    def is_image(k: str) -> bool:
        d = obs_g[k]
        return isinstance(d, h5py.Dataset) and d.dtype == np.uint8 and d.ndim == 4

    for k in image_keys:
        if k not in obs_g or not is_image(k):
            fail(
                src,
                f"data/{demos[0]}/obs/{k}",
                f"an image observation uint8 [T, H, W, C] (images: "
                f"{sorted(n for n in obs_g if is_image(n))})",
                describe(obs_g.get(k)),
            )
    base = list(obs_keys) if obs_keys is not None else [k for k in obs_g if not is_image(k)]
    return list(dict.fromkeys([*base, *image_keys]))


def _robomimic_masks(f: h5py.File, src: str, demos: set[str]) -> dict[str, list[str]]:
    mask = f.get("mask")
    if mask is None:
        return {}
    if not isinstance(mask, h5py.Group):
        fail(src, "mask", "a group of filter keys", describe(mask))
    out = {}
    for name in mask:
        d = mask[name]
        if not isinstance(d, h5py.Dataset):
            fail(src, f"mask/{name}", "a dataset of demo names", describe(d))
        names = [
            n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(d[()]).reshape(-1)
        ]
        unknown = [n for n in names if n not in demos]
        if unknown:
            fail(src, f"mask/{name}", "names of demos in data/", f"unknown {unknown[:3]}")
        out[name] = names
    return out


def _robomimic_demo(
    g: Any,
    where: str,
    src: str,
    obs_keys: Sequence[str] | None,
    reward_key: str | None,
    state_keys: Sequence[str] | None,
    task: str,
) -> Trajectory:
    if not isinstance(g, h5py.Group):
        fail(src, where, "a group", describe(g))

    def dataset(parent: Any, name: str, w: str) -> h5py.Dataset:
        d = parent.get(name)
        if not isinstance(d, h5py.Dataset):
            fail(src, f"{w}/{name}", "a dataset", describe(d))
        return d

    actions = dataset(g, "actions", where)
    if actions.ndim != 2:
        fail(src, f"{where}/actions", "[T, act_dim]", describe(actions))
    T = actions.shape[0]
    if "num_samples" in g.attrs and int(g.attrs["num_samples"]) != T:
        fail(
            src,
            f"{where}.attrs['num_samples']",
            f"{T} (the length of actions)",
            str(g.attrs["num_samples"]),
        )

    def read(d: h5py.Dataset, w: str, tail: str = "...") -> np.ndarray:
        if d.ndim < 1 or d.shape[0] != T:
            fail(src, w, f"[T={T}{', ' + tail if tail else ''}] (T from actions)", describe(d))
        return d[()]

    obs_g = g.get("obs")
    if not isinstance(obs_g, h5py.Group):
        fail(src, f"{where}/obs", "a group of observation datasets obs/<key>", describe(obs_g))
    keys = list(obs_keys) if obs_keys is not None else list(obs_g)
    wanted = list(dict.fromkeys([*keys, *(state_keys or [])]))
    for k in wanted:
        if k not in obs_g:
            fail(
                src,
                f"{where}/obs/{k}",
                f"an observation (available: {sorted(obs_g)})",
                "nothing (missing)",
            )
    obs = {k: read(dataset(obs_g, k, f"{where}/obs"), f"{where}/obs/{k}") for k in wanted}
    if state_keys:
        parts = []
        for k in state_keys:
            a = obs.pop(k)
            if a.ndim != 2:
                fail(
                    src,
                    f"{where}/obs/{k}",
                    f"[T={T}, dim] (a low-dim state key)",
                    f"shape {a.shape}",
                )
            parts.append(a.astype(np.float64) if a.dtype != np.float32 else a)
        obs = {"state": np.concatenate(parts, axis=1), **obs}
    if reward_key is None:
        rewards = np.zeros(T)
    else:
        rewards = read(dataset(g, reward_key, where), f"{where}/{reward_key}", "")
        if rewards.ndim != 1:
            fail(src, f"{where}/{reward_key}", f"[T={T}]", f"shape {rewards.shape}")
    if "dones" in g:
        dones = read(dataset(g, "dones", where), f"{where}/dones", "")
        if dones.ndim != 1:
            fail(src, f"{where}/dones", f"[T={T}]", f"shape {dones.shape}")
        dones = flags(dones, src, f"{where}/dones")
    else:
        dones = None
    metadata: dict[str, Any] = {"demo": where.split("/")[-1]}
    if "successes" in g:
        successes = flags(
            read(dataset(g, "successes", where), f"{where}/successes", ""),
            src,
            f"{where}/successes",
        )
    else:
        successes = None
        metadata["successes_recorded"] = False
    observations = obs["state"] if list(obs) == ["state"] else obs
    return Trajectory(observations, actions[()], rewards, successes, dones, task, "", metadata)


def describe_robomimic(path: Path) -> dict[str, Any]:
    """What a robomimic file holds, without reading its arrays (see
    :func:`robopref.data.importers.describe_source`)."""
    out: dict[str, Any] = {"format": "robomimic", "source": str(path)}
    with h5py.File(path, "r") as f:
        data = f.get("data")
        demos = demo_names(data) if isinstance(data, h5py.Group) else []
        out["episodes"] = len(demos)
        obs, other = {}, {}
        if demos:
            g = data[demos[0]]
            for k, d in (g.get("obs") or {}).items():
                if isinstance(d, h5py.Dataset):
                    image = d.dtype == np.uint8 and d.ndim == 4
                    obs[k] = f"{list(d.shape[1:])} {d.dtype}" + (" (image)" if image else "")
            for k, d in g.items():
                if isinstance(d, h5py.Dataset):
                    other[k] = f"{list(d.shape[1:])} {d.dtype}"
                elif k not in ("obs",):
                    other[k] = "group"
        out["observations"] = obs
        out["other"] = other
        out["filter_keys"] = sorted(f["mask"]) if isinstance(f.get("mask"), h5py.Group) else []
    return out


# --------------------------------------------------------------------------- writing


def write_hdf5(
    dataset: TrajectoryDataset,
    out: PathLike,
    *,
    next_obs: bool = False,
    what: str = "write it",
    image_compression: str | None = "gzip",
) -> None:
    """Write ``dataset`` (and its queries) as robopref's HDF5 file ``out``: the layout and the
    checks of :func:`robopref.data.save_dataset`, plus ``data/demo_<i>/next_obs/<key>`` with
    ``next_obs``.

    The writer lock of ``out`` is held throughout (``what`` says why, for the message another
    writer gets); the file is written to a temporary beside ``out`` and renamed, through
    :func:`~robopref.data.formats._common.new_hdf5_file`, so a read-only folder or a full disk
    is one :class:`DataValidationError` naming ``out``, with nothing left behind and an
    existing ``out`` unchanged.

    Raises:
        DataValidationError: an inconsistent dataset, an output that is not a regular file, or
            ``out`` cannot be written.
        FileBusyError: another process holds the writer lock of ``out``.
    """
    out = Path(out)
    source = f"write({out})"
    dataset.validate(source)
    meta = hdf5._dumps(dataset.metadata, f"{source}: dataset metadata")
    traj_meta = [
        hdf5._dumps(t.metadata, f"{source}: trajectory {i}: metadata")
        for i, t in enumerate(dataset)
    ]
    filter_keys = hdf5._filter_keys_for_save(dataset, source)
    env_args = dataset.metadata.get("env_args")
    if not isinstance(env_args, dict):
        tasks = dataset.tasks
        env_args = {
            "env_name": tasks[0] if len(tasks) == 1 else "",
            "type": hdf5._GYM_ENV_TYPE,
            "env_kwargs": {},
        }
    env_json = hdf5._dumps(env_args, f"{source}: metadata['env_args']")
    check_output(out)
    with locked_output(out, what), new_hdf5_file(out) as h:
        remove_stale_temporaries(out)  # nested ones of older versions
        f = h.file
        f.attrs[hdf5._FORMAT_ATTR] = hdf5.FORMAT_VERSION
        data = f.create_group("data")
        data.attrs["total"] = int(sum(len(t) for t in dataset))
        data.attrs["env_args"] = env_json
        data.attrs["robopref_metadata"] = meta
        for i, t in enumerate(dataset):
            g = data.create_group(f"demo_{i}")
            hdf5._write_demo(g, t, traj_meta[i], image_compression)
            if next_obs:
                _write_next_obs(g, t, image_compression)
            h.check()
        if filter_keys:
            mask = f.create_group("mask")
            for name, idx in filter_keys.items():
                mask.create_dataset(name, data=np.array([f"demo_{j}" for j in idx], dtype="S"))
        if dataset.queries is not None:
            hdf5._write_queries(f, dataset.queries, source)


def _write_next_obs(g: h5py.Group, t: Trajectory, image_compression: str | None) -> None:
    """``next_obs[t] = obs[t + 1]``; the last step repeats the last observation, as robomimic's
    own converters do."""
    obs = t.observations if isinstance(t.observations, dict) else {"state": t.observations}
    nxt = g.create_group("next_obs", track_order=True)
    for key, arr in obs.items():
        hdf5._write_array(nxt, key, np.concatenate([arr[1:], arr[-1:]]), image_compression)


def export_robomimic(dataset: TrajectoryDataset, out: PathLike) -> None:
    """robopref's HDF5 file (robomimic's layout) plus ``data/demo_<i>/next_obs/<key>``
    (``next_obs[t] = obs[t + 1]``, the last step repeats the last observation, as robomimic's
    own converters do), so that robomimic's ``SequenceDataset`` loads it with its default
    ``load_next_obs=True``.

    Written like :func:`write_hdf5`: under the writer lock of ``out`` (a second export, or
    ``robopref label``, of the same file waits for nothing and gets a one-line busy error),
    atomically, and failing with one line naming ``out`` on a read-only folder or a full disk.
    """
    write_hdf5(dataset, out, next_obs=True, what="export to it")
