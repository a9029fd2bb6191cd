"""The layers of robopref.ot: shared code at the bottom, two engines that never import each
other, the public dispatchers on top, and no import circle (function-local imports included)."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import robopref.ot as rot

OT_DIR = Path(rot.__file__).parent
BOTTOM = {"_common", "_loop"}
NUMPY_ENGINE = {"_numba", "_numba_kernels", "_sinkhorn", "_gromov", "_lowrank"}
TORCH_ENGINE = {"_torch_engine"}
TOP = {"_dispatch", "__init__"}


def _imports(path: Path) -> set[str]:
    """Modules of robopref.ot that ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ._x import y
                base = "robopref.ot" + ("." + base if base else "")
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["robopref", "ot"] and len(parts) >= 3:
                found.add(parts[2])
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in OT_DIR.glob("*.py")}


def test_every_module_has_a_layer(graph):
    known = BOTTOM | NUMPY_ENGINE | TORCH_ENGINE | TOP
    assert set(graph) == known, f"modules not assigned to a layer: {set(graph) ^ known}"


def _reach(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle(graph):
    cyclic = sorted(m for m in graph if m in _reach(graph, m))
    assert not cyclic, f"modules on an import circle: {cyclic}"


def test_engines_do_not_import_each_other(graph):
    for mod in NUMPY_ENGINE:
        assert not _reach(graph, mod) & TORCH_ENGINE, mod
    for mod in TORCH_ENGINE:
        assert not _reach(graph, mod) & NUMPY_ENGINE, mod


def test_each_layer_imports_only_layers_below(graph):
    assert graph["_common"] == set()
    assert graph.get("_loop", set()) <= {"_common"}
    for mod in NUMPY_ENGINE | TORCH_ENGINE:
        assert not graph.get(mod, set()) & TOP, mod
    # the shared layer is used by both engines (else it is not shared)
    assert {"_common", "_loop"} <= _reach(graph, "_gromov")
    assert {"_common", "_loop"} <= graph["_torch_engine"]


def _cloud(n, seed):
    x = np.random.default_rng(seed).random((n, 2))
    C = ((x[:, None] - x[None]) ** 2).sum(-1)
    return C / C.max()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("tol", [None, 1e-12])
def test_warnings_point_at_the_callers_line(backend, tol):
    C1, C2, M = _cloud(12, 0), _cloud(10, 1), np.random.default_rng(2).random((12, 10))
    if backend == "torch":
        C1, C2, M = torch.tensor(C1), torch.tensor(C2), torch.tensor(M)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rot.entropic_gromov_wasserstein(C1, C2, eps=0.01, max_iter=2, tol=tol)
        rot.sinkhorn(None, None, M, 1e-4, max_iter=2)
    msgs = [(str(w.message).split(":")[0], Path(w.filename).name) for w in caught]
    assert [m for m, _ in msgs] == ["entropic_gromov_wasserstein", "sinkhorn"], msgs
    assert {f for _, f in msgs} == {Path(__file__).name}, msgs
