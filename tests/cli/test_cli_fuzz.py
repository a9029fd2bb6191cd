"""Random command lines (issue 13): unknown keys, wrong types, out-of-range numbers and YAML junk
given to ``collect``, ``label``, ``run`` and ``bench`` end with exit code 0 or 2 (never an
exception, which the real command would print as a traceback), a one-line error, and the
input dataset unchanged byte for byte when the command fails.

The commands run in this process (``robopref.cli.main``) with the Meta-World collector
replaced by a tiny stub, so a random command line that happens to be valid costs milliseconds.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import shutil
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from cli_factory import ROOT, tiny_dataset, tiny_file
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robopref.cli import main
from robopref.data import load_dataset

# ROBOPREF_FUZZ_EXAMPLES=500 explores further with fresh random examples on every run.
EXTRA = int(os.environ.get("ROBOPREF_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=EXTRA or 40,
    deadline=None,
    derandomize=not EXTRA,  # by default the same examples on every run (reproducible)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Each key with values a valid config could hold, so that many examples get past validation.
LABEL_VALID = {
    "num_queries": ["1", "5", "40"], "k": ["2", "3", "4"], "segment_length": ["1", "5", "25"],
    "budget": ["null", "1", "30"], "seed": ["0", "3"],
    "teacher.name": ["oracle", "mistake", "stochastic", "myopic", "skip", "equal", "regret",
                     "custom"],
    "teacher.beta": ["null", "0.5", "10"], "teacher.gamma": ["0.9", "1"],
    "teacher.eps": ["0", "0.5", "1"], "teacher.skip_threshold": ["null", "0.1", "-1"],
    "teacher.equal_threshold": ["0", "0.1"], "teacher.threshold_mode": ["relative", "absolute"],
    "teacher.regret": ["true", "false"], "teacher.value_key": ["values", "v"],
    "teacher.value_gamma": ["0.5", "0.99"], "teacher.value_knn": ["1", "3", "50"],
    "teacher.soft": ["true", "false"], "teacher.seed": ["0", "7"],
}  # fmt: skip
COLLECT_VALID = {
    "tasks": ["[reach-v3]", "[button-press-v3, reach-v3]"], "expert_episodes": ["0", "1"],
    "noisy_episodes": ["0", "2"], "noise_levels": ["[0.5]", "[]"],
    "goal_mismatch_episodes": ["0", "1"], "random_episodes": ["0", "1"],
    "other_task_episodes": ["0", "1"], "other_tasks": ["null", "[reach-v3]"],
    "mismatch_noise": ["0.1"], "max_episode_steps": ["1", "20"],
    "goal_observable": ["true", "false"], "seed": ["0", "9"], "scene_seed": ["null", "3"],
    "num_workers": ["1"], "start_method": ["auto", "fork"],
}  # fmt: skip
RUN_VALID = {
    "dataset_path": ["data.h5", "sub/d.h5"],
    **{f"collect.{k}": v for k, v in COLLECT_VALID.items()},
    **{f"label.{k}": v for k, v in LABEL_VALID.items()},
}
LABEL_KEYS = ["teacher", *LABEL_VALID]
COLLECT_KEYS = list(COLLECT_VALID)
RUN_KEYS = ["method", "collect", "label", *RUN_VALID]
JUNK_KEYS = ["nosuch", "teacher.nosuch", "a.b.c", "", ".", "x..y", "num_queries.sub", "k.0"]
YAML_JUNK = [
    "[", "{a: ", "]", "}", "!!python/object/apply:os.system ['true']", "*x", "&a b", "'", '"',
    "- -", "? ", "@", "`", "%YAML 1.1", "{", "null", "~", "[1, 2", "{a: 1}", "[]", "true", "yes",
    "1e400", ".nan", "-.inf", "2020-01-01", "0x1F", "0o17", "[reach-v3]", "[button-press-v3]",
    "oracle", "mistake", "stochastic", "regret", "skip", "equal", "relative", "collect", "pearl",
    "\t", "a: b: c", "--", "- a\n- b", "é",
]  # fmt: skip
NUMBERS = [-(10**9), -5, -1, 0, 1, 2, 3, 5, 7, 10**9, 10**30, 2**63]

# Any values: small and huge integers, floats (also nan/inf), booleans, YAML junk, short text
# ("/" is left out so that a random path stays inside the test's folder).
VALUES = st.one_of(
    st.sampled_from(NUMBERS).map(str),
    st.integers(-3, 40).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.sampled_from(YAML_JUNK),
    st.text(st.characters(blacklist_characters="/\\\x00", codec="utf-8"), max_size=8),
)


def overrides(valid: dict[str, list[str]], keys: list[str]) -> st.SearchStrategy[list[str]]:
    """Half the time keys with valid values (a valid command line, unless the values clash),
    else any key (also unknown ones) with any value, or no ``=`` at all."""
    plausible = st.sampled_from(sorted(valid)).flatmap(
        lambda k: st.sampled_from(valid[k]).map(lambda v: f"{k}={v}")
    )
    key = st.one_of(st.sampled_from(keys), st.sampled_from(JUNK_KEYS))
    item = st.one_of(
        st.builds(lambda k, v: f"{k}={v}", key, VALUES),
        st.sampled_from(["nokey", "=3", "==", "a=b=c"]),
    )
    return st.one_of(st.lists(plausible, max_size=3), st.lists(item, max_size=4))


# A --config file: none (the default), missing, or random YAML text.
CONFIG = st.one_of(
    st.none(),
    st.none(),
    st.just("MISSING"),
    st.lists(
        st.sampled_from([*YAML_JUNK, "num_queries: 5", "tasks: [reach-v3]", "k: 3", "\x00"]),
        max_size=3,
    ).map("\n".join),
)


class Example:
    """A fresh folder per example inside one folder for the test."""

    counter = itertools.count()

    def __init__(self, root: Path):
        self.dir = root / f"ex{next(self.counter)}"
        self.dir.mkdir()

    def config_args(self, config: str | None) -> list[str]:
        if config is None:
            return []
        path = self.dir / "cfg.yaml"
        if config != "MISSING":
            path.write_text(config, encoding="utf-8")
        return ["--config", str(path)]


def call(argv: list) -> tuple[int, str]:
    """``main(argv)``: returns (exit code, stderr); argparse's own exit counts as exit 2."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


def check(rc: int, err: str) -> None:
    event(f"exit {rc}")  # pytest --hypothesis-show-statistics: how many runs got through
    assert rc in (0, 2), (rc, err)
    if rc == 2 and not err.startswith("usage:"):  # argparse prints its usage line too
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("robopref: "), err


def stub_collector():
    return mock.patch("robopref.envs.collect_dataset", side_effect=lambda *a, **k: tiny_dataset())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def labelled(root):
    """A dataset that already holds labels (a refused `label` must leave it as it is)."""
    return tiny_file(root / "labelled.h5", labels=6)


@SETTINGS
@given(
    ovs=overrides(LABEL_VALID, LABEL_KEYS),
    config=CONFIG,
    mode=st.sampled_from(["", "--overwrite", "--append"]),
)
def test_label_random_command_lines(root, labelled, ovs, config, mode):
    ex = Example(root)
    path = ex.dir / "d.h5"
    shutil.copy(labelled, path)
    before = path.read_bytes()
    rc, err = call(["label", path, *ex.config_args(config), *([mode] if mode else []), *ovs])
    check(rc, err)
    if rc == 2:
        assert path.read_bytes() == before
    else:  # labels written; the trajectories are the same bytes
        assert mode and load_dataset(path).queries.num_queries >= 1
        with h5py.File(path) as f, h5py.File(labelled) as g:
            for name in g["data"]:
                a, b = f[f"data/{name}/rewards"][()], g[f"data/{name}/rewards"][()]
                np.testing.assert_array_equal(a, b)


@SETTINGS
@given(ovs=overrides(COLLECT_VALID, COLLECT_KEYS), config=CONFIG, existing=st.booleans())
def test_collect_random_command_lines(root, labelled, ovs, config, existing):
    ex = Example(root)
    out = ex.dir / "out.h5"
    if existing:
        shutil.copy(labelled, out)
    before = out.read_bytes() if existing else None
    with stub_collector():
        overwrite = ["--overwrite"] if existing else []  # else refused, tested elsewhere
        rc, err = call(["collect", *ex.config_args(config), "--out", out, *overwrite, *ovs])
    check(rc, err)
    if rc == 2:
        assert (out.read_bytes() == before) if existing else not out.exists()
    else:
        assert len(load_dataset(out)) == 6


@settings(SETTINGS, max_examples=EXTRA or 25)
@given(ovs=overrides(RUN_VALID, RUN_KEYS), position=st.sampled_from(["before", "after"]))
def test_run_random_command_lines(root, ovs, position):
    ex = Example(root)
    base = ROOT / "robopref" / "configs" / "collect" / "demo.yaml"
    out = ["--out", ex.dir / "run"]
    argv = ["run", base, *ovs, *out] if position == "before" else ["run", base, *out, *ovs]
    with mock.patch(
        "robopref.methods.collect.collect_dataset", side_effect=lambda *a, **k: tiny_dataset()
    ):
        rc, err = call(argv)
    check(rc, err)


SUITE_VALUES = st.one_of(
    VALUES,
    st.sampled_from(["robopref/configs/collect/demo.yaml", "MISSING.yaml", "BAD.yaml"]),
    st.lists(VALUES, max_size=2),
    st.dictionaries(st.sampled_from(["seed", "0", "a"]), st.lists(VALUES, max_size=2), max_size=2),
)
SUITE = st.dictionaries(
    st.sampled_from(["name", "base", "overrides", "axes", "nosuch"]), SUITE_VALUES, max_size=5
)


@settings(SETTINGS, max_examples=EXTRA or 25)
@given(suite=st.one_of(SUITE, st.sampled_from(YAML_JUNK)))
def test_bench_random_suites(root, suite):
    import yaml

    ex = Example(root)
    (ex.dir / "BAD.yaml").write_text("a: [1,\n")
    path = ex.dir / "suite.yaml"
    text = suite if isinstance(suite, str) else yaml.safe_dump(suite)
    path.write_text(text.replace("BAD.yaml", str(ex.dir / "BAD.yaml")), encoding="utf-8")
    with mock.patch(
        "robopref.methods.collect.collect_dataset", side_effect=lambda *a, **k: tiny_dataset()
    ):
        rc, err = call(["bench", path, "--store", ex.dir / "store"])
    check(rc, err)
