"""Issue 13 (command line and dataset files): teacher presets, reward-less data, labels that are
not silently replaced, writer locks, same-file import, symlinks, file modes, stale temporaries,
and one-line errors (exit code 2, no traceback) for bad input. Subprocess tests unless noted."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from cli_factory import (
    ROOT,
    assert_one_line_error,
    lock_held_elsewhere,
    run_cli,
    run_main,
    tiny_dataset,
    tiny_file,
)

from robopref.cli import main
from robopref.data import load_dataset

LABEL = ["segment_length=5", "num_queries=300"]


# --------------------------------------------------------------------------- item 2: presets


def test_teacher_presets_apply_from_the_command_line(tmp_path, capsys):
    """In-process: same seed, same queries; the mistake teacher flips ~10% of the oracle's
    labels (eps = 0.1), the stochastic one (beta = 1) disagrees on close pairs."""
    labels = {}
    for name in ("oracle", "mistake", "stochastic"):
        path = tiny_file(tmp_path / f"{name}.h5")
        assert main(["label", str(path), f"teacher.name={name}", *LABEL]) == 0
        q = load_dataset(path).queries
        assert q.teacher == name
        labels[name] = q
    oracle, mistake, stoch = labels["oracle"], labels["mistake"], labels["stochastic"]
    np.testing.assert_array_equal(oracle.traj_index, mistake.traj_index)
    np.testing.assert_array_equal(oracle.start, mistake.start)
    flipped = np.mean(oracle.labels[:, 0] != mistake.labels[:, 0])
    # Binomial(300, 0.1): mean 30 flips, sd 5.2; [12, 54] is beyond 3.4 sd either side.
    assert 12 / 300 <= flipped <= 54 / 300
    assert mistake.metadata["teacher_config"]["eps"] == 0.1
    assert stoch.metadata["teacher_config"]["beta"] == 1.0
    assert np.mean(oracle.labels[:, 0] != stoch.labels[:, 0]) > 0.05


def test_unknown_teacher_name_is_one_line_listing_the_names(tmp_path):
    path = tiny_file(tmp_path / "d.h5")
    before = path.read_bytes()
    res = run_cli("label", path, "teacher.name=nosuch", *LABEL)
    assert_one_line_error(
        res, "command line override 'teacher.name=nosuch'", "nosuch", "mistake", "stochastic"
    )
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- item 3: no rewards


def test_label_refuses_a_dataset_without_rewards(tmp_path):
    path = tiny_file(tmp_path / "real.h5", rewards=False)
    before = path.read_bytes()
    res = run_cli("label", path, *LABEL)
    assert_one_line_error(res, str(path), "rewards", "robopref label-ui")
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- item 6: overwrite


def test_label_keeps_existing_labels_unless_told(tmp_path):
    path = tiny_file(tmp_path / "d.h5", labels=7, teacher="human")
    before = path.read_bytes()
    res = run_cli("label", path, *LABEL)
    assert_one_line_error(res, str(path), "7 labels", "'human'", "--overwrite", "--append")
    assert path.read_bytes() == before
    res = run_cli("label", path, "num_queries=0", "--overwrite")
    assert_one_line_error(res, "command line override 'num_queries=0'", "num_queries")
    assert path.read_bytes() == before

    # in-process: --append keeps the 7 human labels first, --overwrite replaces them
    old = load_dataset(path).queries
    assert main(["label", str(path), "--append", "seed=5", *LABEL]) == 0
    q = load_dataset(path).queries
    assert q.num_queries == 7 + 300 and q.teacher == "human+oracle"
    np.testing.assert_array_equal(q.labels[:7], old.labels)
    np.testing.assert_array_equal(q.traj_index[:7], old.traj_index)
    assert q.metadata["appended"][0]["first_query"] == 7
    assert main(["label", str(path), "--overwrite", "segment_length=5", "num_queries=11"]) == 0
    q = load_dataset(path).queries
    assert q.num_queries == 11 and q.teacher == "oracle"


# --------------------------------------------------------------------------- item 7: locks


def test_a_second_writer_gets_a_one_line_busy_error(tmp_path, capsys):
    """Another process holds the lock: label, collect --out and import refuse at once (collect
    before collecting anything: the default config is valid) and leave the file as it was."""
    path = tiny_file(tmp_path / "d.h5")
    src = tiny_file(tmp_path / "src.h5")
    before = path.read_bytes()
    with lock_held_elsewhere(path):
        res = run_cli("label", path, *LABEL)
        assert_one_line_error(res, str(path), "another robopref process", "label")
        with mock.patch("robopref.envs.collect_dataset", side_effect=AssertionError("collected")):
            res = run_main(capsys, "collect", "--out", path, "--overwrite")
        assert_one_line_error(res, str(path), "another robopref process", "collect")
        res = run_main(capsys, "import", src, path, "--overwrite")
        assert_one_line_error(res, str(path), "another robopref process", "import")
    assert path.read_bytes() == before
    assert run_main(capsys, "label", path, *LABEL).rc == 0  # released: the next writer goes on


# --------------------------------------------------------------------------- item 9: files


def test_import_onto_its_own_source_is_refused(tmp_path, capsys):
    path = tiny_file(tmp_path / "self.h5", labels=5)
    before = path.read_bytes()
    assert_one_line_error(run_cli("import", path, path), str(path), "source file")
    (tmp_path / "link.h5").symlink_to(path)
    res = run_main(capsys, "import", tmp_path / "link.h5", path)
    assert_one_line_error(res, "source file", "nothing was written")
    assert path.read_bytes() == before
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert names == ["link.h5", "self.h5"]  # no temporaries left


def test_label_through_a_symlink_keeps_the_link(tmp_path, capsys):
    target = tiny_file(tmp_path / "data" / "real.h5")
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    assert run_main(capsys, "label", link, *LABEL).rc == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert load_dataset(target).queries.num_queries == 300
    # one lock for both names: the lock file sits beside the real file
    assert (tmp_path / "data" / ".real.h5.lock").exists()
    assert not (tmp_path / ".link.h5.lock").exists()


@pytest.fixture
def umask():
    """Set the process umask for a test; restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def test_written_files_follow_the_umask(tmp_path, capsys, umask):
    src = tiny_file(tmp_path / "src.h5")
    umask(0o027)
    assert run_main(capsys, "import", src, tmp_path / "new.h5").rc == 0
    assert stat.S_IMODE((tmp_path / "new.h5").stat().st_mode) == 0o640
    umask(0o002)
    assert run_main(capsys, "import", src, tmp_path / "new2.h5").rc == 0
    assert stat.S_IMODE((tmp_path / "new2.h5").stat().st_mode) == 0o664
    # a rewritten file keeps the mode it had
    os.chmod(src, 0o604)
    umask(0o077)
    assert run_main(capsys, "label", src, *LABEL).rc == 0
    assert stat.S_IMODE(src.stat().st_mode) == 0o604


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path, capsys):
    path = tiny_file(tmp_path / "d.h5")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now (not reused within this test in practice)
    stale = tmp_path / f".d.h5.{dead.pid}-0a1b2c3d.tmp"
    live = tmp_path / f".d.h5.{os.getpid()}-0a1b2c3d.tmp"  # a writer that still runs
    other = tmp_path / f".other.h5.{dead.pid}-0a1b2c3d.tmp"  # another file's: not ours
    for p in (stale, live, other):
        p.write_bytes(b"half a file")
    assert run_main(capsys, "label", path, *LABEL).rc == 0
    assert not stale.exists() and live.exists() and other.exists()


# --------------------------------------------------------------------------- one-line errors


def test_import_of_a_truncated_file_is_one_line(tmp_path):
    full = tiny_file(tmp_path / "full.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(full[: len(full) // 2])
    res = run_cli("import", cut, tmp_path / "out.h5")
    assert_one_line_error(res, str(cut), "truncated")
    assert not (tmp_path / "out.h5").exists()


def test_out_of_range_label_overrides_name_the_command_line(tmp_path):
    path = tiny_file(tmp_path / "d.h5")
    res = run_cli("label", path, "num_queries=-5", "budget=-3", "seed=-1")
    line = assert_one_line_error(
        res,
        "command line override 'num_queries=-5': field 'num_queries'",
        "command line override 'budget=-3': field 'budget'",
        "command line override 'seed=-1': field 'seed'",
    )
    assert "default.yaml" not in line


@pytest.mark.parametrize("command", ["label", "collect", "run"])
def test_yaml_syntax_error_in_config_is_one_line(tmp_path, capsys, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: collect\nlabel: {num_queries: [1,\n")
    path = tiny_file(tmp_path / "d.h5")
    args = {
        "label": ["label", path, "--config", bad],
        "collect": ["collect", "--config", bad, "--out", tmp_path / "c.h5"],
        "run": ["run", bad, "--out", tmp_path / "run"],
    }[command]
    res = run_cli(*args) if command == "label" else run_main(capsys, *args)
    assert_one_line_error(res, str(bad), "YAML syntax error", "line 3")


def test_collect_into_a_directory_fails_before_collecting(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    res = run_cli("collect", "--out", tmp_path / "d", "tasks=[reach-v3]")
    assert_one_line_error(res, str(tmp_path / "d"), "--out", "directory")
    with mock.patch("robopref.envs.collect_dataset", side_effect=AssertionError("collected")):
        res = run_main(capsys, "collect", "--out", tmp_path / "d")
    assert_one_line_error(res, "directory")


def test_overrides_after_run_out_are_accepted(tmp_path):
    config = ROOT / "robopref" / "configs" / "collect" / "demo.yaml"
    res = run_cli("run", config, "--out", tmp_path / "r", "label.num_queries=-5")
    line = assert_one_line_error(res, "command line override 'label.num_queries=-5'")
    assert "field 'label.num_queries'" in line and "unrecognized" not in line
    assert not (tmp_path / "r").exists()  # validated before any work


def test_unwritable_output_is_one_line(tmp_path, capsys):
    """A folder the user cannot write to (an OSError naming the file) is bad input."""
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        res = run_main(capsys, "import", tiny_file(tmp_path / "s.h5"), ro / "out.h5")
        assert_one_line_error(res, "ro", "ermission")
    finally:
        ro.chmod(0o700)


def test_collect_writes_through_the_lock(tmp_path, capsys):
    """collect --out (stub collector) writes the file and releases the lock."""
    out = tmp_path / "c.h5"
    with mock.patch("robopref.envs.collect_dataset", return_value=tiny_dataset()):
        assert run_main(capsys, "collect", "--out", out, "tasks=[reach-v3]").rc == 0
    assert len(load_dataset(out)) == 6
    assert run_cli("label", out, *LABEL).rc == 0  # another process can take the lock now


def test_a_teacher_that_skips_everything_does_not_wipe_labels(tmp_path, capsys):
    """Found by the fuzz test: --overwrite with a skip threshold above every return wrote an
    empty label set over the stored labels."""
    path = tiny_file(tmp_path / "d.h5", labels=7)
    before = path.read_bytes()
    args = ["teacher.name=skip", "teacher.skip_threshold=1e9", "teacher.threshold_mode=absolute"]
    res = run_main(capsys, "label", path, "--overwrite", *LABEL, *args)
    assert_one_line_error(res, str(path), "skipped all 300 queries", "nothing was written")
    assert path.read_bytes() == before


def test_unlabelled_queries_chosen_for_label_ui_are_kept(tmp_path, capsys):
    """Queries picked for the labelling page (label_kind "none") are the user's work too."""
    from robopref.data import sample_queries, save_queries

    path = tiny_file(tmp_path / "d.h5")
    asked = sample_queries(load_dataset(path), 4, 2, 5, np.random.default_rng(0))
    save_queries(path, asked)
    before = path.read_bytes()
    res = run_main(capsys, "label", path, *LABEL)
    assert_one_line_error(res, "4 unlabelled queries", "--overwrite")
    res = run_main(capsys, "label", path, "--append", *LABEL)
    assert_one_line_error(res, "--append", "none")
    assert path.read_bytes() == before


def test_label_of_a_missing_file_creates_nothing(tmp_path, capsys):
    res = run_main(capsys, "label", tmp_path / "nodir" / "x.h5", *LABEL)
    assert_one_line_error(res, "x.h5", "missing")
    assert list(tmp_path.iterdir()) == []


def test_import_of_corrupt_files_is_one_line(tmp_path, capsys):
    """In-process: single flipped bytes all over a file; h5py reports some as KeyError (bad
    metadata checksum), which used to escape as a traceback."""
    good = tiny_file(tmp_path / "good.h5", labels=5).read_bytes()
    rng = np.random.default_rng(0)
    codes = []
    for j in rng.integers(0, len(good), size=30):
        bad = bytearray(good)
        bad[j] ^= 0xFF
        (tmp_path / "bad.h5").write_bytes(bytes(bad))
        res = run_main(capsys, "import", tmp_path / "bad.h5", tmp_path / "out.h5", "--overwrite")
        if res.rc == 2:
            assert_one_line_error(res, "bad.h5")
        codes.append(res.rc)
    assert set(codes) <= {0, 2} and codes.count(2) >= 10
