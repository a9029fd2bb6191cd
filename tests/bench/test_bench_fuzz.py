"""Random suites (unknown keys, wrong types, out-of-range overrides, YAML junk) given to
``robopref bench``: exit 0 or 2 with one line, never a traceback; on 2 the store is unchanged."""

import contextlib
import io
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robopref.cli import main

FUZZ_TOY = textwrap.dedent(
    """
    from pydantic import Field
    from robopref.config import StrictModel
    from robopref.methods.result import ReportSpec, RunResult

    class Config(StrictModel):
        method: str = "fuzz_toy"
        task: str = "a"
        seed: int = Field(0, ge=0)
        n: int = Field(1, ge=1, le=3)

    def run(config, out_dir):
        rows = [{"variant": f"v{i}", "success_rate": float(config.seed)} for i in range(config.n)]
        return RunResult("fuzz_toy", rows, [], ReportSpec(metrics=["success_rate"]))
    """
)

keys = st.sampled_from(["task", "seed", "n", "nosuch", "seed.deeper", "method", "", " "])
values = st.sampled_from(["1", "-3", "abc", "[1", "{a: 1}", "", "null", "1e9", "'x'", "[1, 2]"])
overrides = st.one_of(
    st.sampled_from(["task=b", "seed=1", "n=2", "n=3"]),  # valid ones, so that some suites run
    st.builds(lambda k, v: f"{k}={v}", keys, values),
    st.sampled_from(["no-equals-sign", "=", "==1"]),
)
labels = st.one_of(st.sampled_from(["a", "0", "x y", "b/c", "..", "é"]), st.integers(-2, 2))
axes = st.dictionaries(
    st.sampled_from(["task", "seed", "n", "axis"]),
    st.one_of(
        st.dictionaries(labels, st.lists(overrides, max_size=2), min_size=1, max_size=2),
        st.dictionaries(labels, st.lists(overrides, max_size=2), max_size=2),
        st.sampled_from([None, 3, "text", [1, 2]]),
    ),
    min_size=1,
    max_size=2,
)
bases = st.sampled_from(["good", "missing", "junk", "list", "no_method", "bad_method", "folder"])
suites = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["fz", "fz", "", "a/b"]), st.integers()), "axes": axes},
    optional={
        "overrides": st.lists(overrides, max_size=2),
        "unknown": st.just(1),
        "base_kind": bases,
    },
)
good_overrides = st.lists(st.sampled_from(["task=b", "seed=1", "n=2", "n=3"]), max_size=2)
good_suites = st.fixed_dictionaries(  # valid except for odd labels: these run
    {
        "name": st.just("fz"),
        "axes": st.dictionaries(
            st.sampled_from(["task", "seed"]),
            st.dictionaries(labels, good_overrides, min_size=1, max_size=2),
            min_size=1,
            max_size=2,
        ),
    }
)
junk = st.sampled_from(["", "[", "name: [\n", "- 1\n- 2\n", ":\n  -", "\x00", "a: b: c"])


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(suite=st.one_of(good_suites, suites, junk), jobs=st.sampled_from(["1", "1", "0"]))
def test_random_suites_exit_0_or_2_with_one_line(suite, jobs, monkeypatch):
    root = Path(tempfile.mkdtemp(prefix="robopref-fuzz-"))
    try:
        (root / "fuzz_toy.py").write_text(FUZZ_TOY)
        monkeypatch.syspath_prepend(str(root))
        bases_ = {
            "good": "method: fuzz_toy\n",
            "junk": "method: [fuzz_toy\n",
            "list": "- method\n",
            "no_method": "task: a\n",
            "bad_method": "method: os\n",
        }
        for kind, text in bases_.items():
            (root / f"{kind}.yaml").write_text(text)
        (root / "folder.yaml").mkdir()
        store = root / "store"
        store.mkdir()
        before = b'{"cell": "old", "config_hash": "h", "success_rate": 0.5}\n'
        (store / "results.jsonl").write_bytes(before)
        path = root / "suite.yaml"
        if isinstance(suite, dict):
            suite = dict(suite)
            suite["base"] = str(root / f"{suite.pop('base_kind', 'good')}.yaml")
            path.write_text(yaml.safe_dump(suite, allow_unicode=True))
        else:
            path.write_text(suite)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["bench", str(path), "--store", str(store), "--jobs", jobs])
        event(f"exit {code}")
        assert code in (0, 2)
        if code == 2:
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("robopref: "), err.getvalue()
            assert (store / "results.jsonl").read_bytes() == before
        else:
            assert (store / "results.jsonl").read_bytes().startswith(before)
    finally:
        sys.modules.pop("fuzz_toy", None)
        shutil.rmtree(root, ignore_errors=True)
