"""Outputs a command must not replace and writes that cannot finish: special files (FIFO,
device node, socket), existing datasets without ``--overwrite``, read-only targets, a full
disk. Every refusal is exit code 2 with one line naming the path, and leaves every input and
the refused target byte for byte (or node for node) as it was. Subprocess tests unless noted."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from cli_factory import ROOT, assert_one_line_error, run_cli, run_main, tiny_dataset, tiny_file

from robopref.data import load_dataset, load_queries

TINY = [
    "tasks=[reach-v3]", "expert_episodes=1", "noisy_episodes=0", "noise_levels=[]",
    "goal_mismatch_episodes=0", "random_episodes=1", "other_task_episodes=0",
    "max_episode_steps=20",
]  # fmt: skip
LABEL = ["segment_length=5", "num_queries=40"]


def _special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket and (as root) a character device like /dev/null, inside ``folder``."""
    nodes = {"fifo": folder / "fifo"}
    os.mkfifo(nodes["fifo"])
    nodes["socket"] = folder / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(nodes["socket"]))
    s.close()
    with contextlib.suppress(OSError):  # needs root (CAP_MKNOD)
        os.mknod(folder / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        nodes["device"] = folder / "null"
    return nodes


def _node(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), st.st_rdev


def test_special_files_are_never_replaced(tmp_path):
    base = tiny_file(tmp_path / "base.h5", labels=5)
    before = base.read_bytes()
    nodes = _special_files(tmp_path)
    kinds = {k: _node(p) for k, p in nodes.items()}
    for kind, node in nodes.items():
        commands = [
            ("import", base, node),
            ("export", base, node, "--format", "robomimic"),
            ("export", base, node, "--format", "lerobot"),
            ("label", node, *LABEL),
        ]
        if kind != "socket":  # one collect per kind is enough: each one loads Meta-World
            commands.append(("collect", "--out", node, *TINY))
        for args in commands:
            res = run_cli(*args)
            expected = "a folder" if "lerobot" in args else "a regular file"
            assert_one_line_error(res, str(node), f"expected {expected}")
            assert _node(node) == kinds[kind], args
    assert base.read_bytes() == before
    # a regular file where a LeRobot folder is expected
    res = run_cli("export", base, base, "--format", "lerobot")
    assert_one_line_error(res, str(base), "expected a folder", "found a regular file")
    assert base.read_bytes() == before


def test_collect_and_import_refuse_an_existing_dataset(tmp_path):
    src = tiny_file(tmp_path / "src.h5")
    labelled = tiny_file(tmp_path / "labelled.h5", labels=7)
    before = labelled.read_bytes()
    res = run_cli("collect", "--out", labelled, *TINY)
    assert_one_line_error(res, str(labelled), "--out", "exists", "--overwrite")
    res = run_cli("import", src, labelled)
    assert_one_line_error(res, str(labelled), "OUT", "exists", "--overwrite")
    assert labelled.read_bytes() == before
    assert run_cli("import", src, labelled, "--overwrite").rc == 0
    assert load_queries(labelled) is None and len(load_dataset(labelled)) == 6
    assert run_cli("collect", "--out", labelled, "--overwrite", *TINY).rc == 0
    assert load_dataset(labelled).tasks == ["reach-v3"]


# --------------------------------------------------------------------------- read-only targets


def test_root_does_not_replace_a_read_only_file_without_overwrite(tmp_path):
    ro = tiny_file(tmp_path / "ro.h5")
    ro.chmod(0o444)
    before = ro.read_bytes()
    for mode in ([], ["--append"]):
        res = run_cli("label", ro, *mode, *LABEL)
        assert_one_line_error(res, str(ro), "read-only", "--overwrite")
    res = run_cli("export", tiny_file(tmp_path / "b.h5"), ro, "--format", "robomimic")
    assert_one_line_error(res, str(ro), "read-only")
    assert ro.read_bytes() == before
    assert run_cli("label", ro, "--overwrite", *LABEL).rc == 0
    assert load_queries(ro).num_queries == 40
    assert stat.S_IMODE(ro.stat().st_mode) == 0o444  # a replaced file keeps its mode


NOBODY = 65534
# The interpreter lives where "nobody" may not read: import all a command needs, then drop root.
AS_NOBODY = """
import os, sys
import rich.console
import robopref.cli, robopref.data.summary, robopref.methods.collect, robopref.data.exporters
import robopref.data.importers, robopref.envs, mujoco, metaworld, glob
from robopref.envs import CollectConfig, collect_dataset
os.setgroups([]); os.setgid(NOBODY); os.setuid(NOBODY)
sys.exit(robopref.cli.main(sys.argv[1:]))
""".replace("NOBODY", str(NOBODY))


def _as_nobody(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", AS_NOBODY, *map(str, args)],
        env=env, capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_read_only_targets_for_a_user_are_one_line():
    folder = Path(tempfile.mkdtemp(prefix="robopref-ro-"))
    try:
        os.chown(folder, NOBODY, NOBODY)
        probe = _as_nobody("info", folder / "missing.h5")
        if "robopref:" not in probe.stderr:  # e.g. a sandbox that forbids setuid
            pytest.skip(f"cannot run as nobody here: {probe.stderr[-200:]}")
        base = tiny_file(folder / "base.h5", labels=5)
        ro = tiny_file(folder / "ro.h5")
        for name in os.listdir(folder):  # the files and the lock files written as root
            os.chown(folder / name, NOBODY, NOBODY)
        ro.chmod(0o444)
        before = ro.read_bytes()
        for args in (
            ("label", ro, *LABEL),
            ("collect", "--out", ro, *TINY),
            ("export", base, ro, "--format", "robomimic"),
        ):
            p = _as_nobody(*args)
            assert "Traceback" not in p.stderr and p.returncode == 2, (args, p.stderr)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and str(ro) in lines[0], p.stderr
            assert ro.read_bytes() == before
        # the temporary is writable even though the file it replaces is not
        p = _as_nobody("label", ro, "--overwrite", *LABEL)
        assert p.returncode == 0, p.stderr
        assert load_queries(ro).num_queries == 40 and stat.S_IMODE(ro.stat().st_mode) == 0o444
        assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MB tmpfs (skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
    )
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode()[-200:]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(shutil.disk_usage(folder).free - leave, 0))
    return filler


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The files of ``folder`` (lock files are left on purpose: see the guide)."""
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(".lock")
    }


def test_a_full_disk_is_one_line_and_a_rerun_succeeds(small_fs):
    base = tiny_file(small_fs / "base.h5", labels=5)
    lab = tiny_file(small_fs / "lab.h5", labels=5)
    filler = _fill(small_fs, 20_000)
    before = _snapshot(small_fs)
    run_dir = small_fs / "run"
    commands = {
        "collect": ("collect", "--out", small_fs / "new.h5", *TINY),
        "label": ("label", lab, "--overwrite", *LABEL),
        "import": ("import", base, small_fs / "imp.h5"),
        "export": ("export", base, small_fs / "exp.hdf5", "--format", "robomimic"),
        "run": ("run", ROOT / "robopref" / "configs" / "collect" / "demo.yaml", "--out", run_dir,
                *[f"collect.{a}" for a in TINY], "label.segment_length=5"),
    }  # fmt: skip
    for name, args in commands.items():
        res = run_cli(*args)
        # the collector's progress bar shares stderr; the error is one line after it
        res.err = "\n".join(x for x in res.err.splitlines() if not x.startswith("collect:"))
        target = {"label": lab, "run": run_dir}.get(name, args[2])
        assert_one_line_error(res, str(target), "space")
        assert _snapshot(small_fs) == before, name  # nothing replaced, nothing left behind
        failed = run_dir / "FAILED"
        assert not failed.exists() or failed.stat().st_size > 0  # never an empty FAILED
    shutil.rmtree(run_dir, ignore_errors=True)
    filler.unlink()
    for name, args in commands.items():
        res = run_cli(*args)
        assert res.rc == 0, (name, res.err)
    assert load_queries(lab).num_queries == 40 and len(load_dataset(small_fs / "imp.h5")) == 6


def test_injected_enospc_is_one_line_and_a_rerun_succeeds(tmp_path, capsys):
    """In this process: the free space HDF5 writers see is 10 kB."""
    lab = tiny_file(tmp_path / "lab.h5", labels=5)
    before = lab.read_bytes()
    out = tmp_path / "new.h5"
    tiny = mock.patch("robopref.envs.collect_dataset", side_effect=lambda *a, **k: tiny_dataset())
    usage = shutil.disk_usage(tmp_path)._replace(free=10_000)
    with mock.patch("robopref.data.hdf5.shutil.disk_usage", return_value=usage), tiny:
        res = run_main(capsys, "label", lab, "--overwrite", *LABEL)
        assert_one_line_error(res, str(lab), "No space left")
        res = run_main(capsys, "collect", "--out", out)
        assert_one_line_error(res, str(out), "No space left")
    assert lab.read_bytes() == before and not out.exists()
    assert sorted(os.listdir(tmp_path)) == [".lab.h5.lock", ".new.h5.lock", "lab.h5"]
    with tiny:
        assert run_main(capsys, "collect", "--out", out).rc == 0
    assert run_main(capsys, "label", lab, "--overwrite", *LABEL).rc == 0
    assert load_queries(lab).num_queries == 40


def test_a_checkpoint_that_does_not_fit_names_its_file(tmp_path):
    """torch.save reports a full disk as a RuntimeError: it becomes ENOSPC naming the file,
    and the temporary is gone (in this process)."""
    import torch

    from robopref.utils import atomic_path

    target = tmp_path / "reward.pt"
    usage = shutil.disk_usage(tmp_path)._replace(free=4096)
    fail = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    with (
        mock.patch("robopref.utils.shutil.disk_usage", return_value=usage),
        mock.patch("torch.save", side_effect=fail),
        pytest.raises(OSError) as e,
        atomic_path(target) as tmp,
    ):
        torch.save({"w": torch.zeros(3)}, tmp)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:  # other errors stay as they are
        raise RuntimeError("a bug")


def test_os_errors_without_a_file_name_name_the_output(tmp_path, capsys):
    """h5py and pyarrow raise OSErrors without ``filename``: one line naming the output."""
    base = tiny_file(tmp_path / "base.h5")
    out = tmp_path / "out.hdf5"
    err = OSError("Can't synchronously write data (file write failed)")
    with mock.patch("robopref.data.exporters.export_robomimic", side_effect=err):
        res = run_main(capsys, "export", base, out, "--format", "robomimic")
    assert_one_line_error(res, str(out), "file write failed")


def test_a_failed_run_on_a_full_disk_leaves_no_empty_failed_file(tmp_path):
    from robopref.methods.run import _after_failure

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: collect\n")
    (run / "part.h5").write_bytes(b"x")

    def full(self, *a, **k):
        self.touch()  # open() created the file, the write then failed
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    with mock.patch.object(Path, "write_text", full):
        _after_failure(run, True, RuntimeError("boom"))
    assert sorted(os.listdir(run)) == ["config.yaml", "part.h5"]


# --------------------------------------------------------------------------- checked first


@pytest.mark.parametrize(
    "override, field",
    [
        ("seed=-1", "seed"),
        ("seed=99999999999999999999999", "seed"),
        ("seed=true", "seed"),
        ("device=gpu", "device"),
        ("variants=[]", "variants"),
        ("variants=[oracle,oracle]", "variants"),
        ("seed=" + "[" * 500 + "]" * 500, "nested"),
        ("policy.seed=" + "{a: " * 500 + "1" + "}" * 500, "nested"),
    ],
)
def test_bad_run_configs_fail_before_any_work(tmp_path, override, field):
    out = tmp_path / "run"
    res = run_cli(
        "run", ROOT / "robopref" / "configs" / "pearl" / "demo.yaml", override, "--out", out
    )
    assert_one_line_error(res, field)
    assert not out.exists()


def test_cuda_on_a_machine_without_it_fails_before_any_work(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    res = run_cli(
        "run", ROOT / "robopref" / "configs" / "pearl" / "demo.yaml", "device=cuda", "--out", out
    )
    assert_one_line_error(res, "field 'device'", "CUDA device(s)")
    assert not out.exists()


@pytest.mark.parametrize("seed", ["-1", str(10**30), "true"])
def test_label_and_collect_check_the_seed_first(tmp_path, seed):
    lab = tiny_file(tmp_path / "lab.h5")
    before = lab.read_bytes()
    assert_one_line_error(run_cli("label", lab, f"seed={seed}"), "field 'seed'")
    assert lab.read_bytes() == before
    out = tmp_path / "c.h5"
    assert_one_line_error(run_cli("collect", "--out", out, f"seed={seed}"), "field 'seed'")
    assert not out.exists()


# --------------------------------------------------------------------------- huge values


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("obs/state", 1e300, "beyond the float32 range"),
        ("rewards", 1e307, "beyond the float32 range"),
        ("rewards", 5e37, "sum overflows"),
    ],
)
def test_values_beyond_float32_are_rejected_naming_the_array(tmp_path, field, value, needle):
    path = tiny_file(tmp_path / "d.h5")
    with h5py.File(path, "r+") as f:
        g = f["data/demo_2"]
        arr = g[field][()].astype(np.float64)
        arr[...] = value if field == "rewards" else arr
        if field != "rewards":
            arr[3, 1] = value
        del g[field]
        g.create_dataset(field, data=arr)
    before = path.read_bytes()
    for args in (("label", path, *LABEL), ("export", path, tmp_path / "e.hdf5", "--format",
                                             "robomimic")):  # fmt: skip
        assert_one_line_error(run_cli(*args), str(path), f"data/demo_2/{field}", needle)
    assert path.read_bytes() == before
