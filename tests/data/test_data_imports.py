"""The data room has no import circle, and no import hides one inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import robopref.data

DATA = Path(robopref.data.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in DATA.rglob("*.py"):
        parts = path.relative_to(DATA.parent.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module of robopref.data, at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` and `try:` blocks still run at import
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            # `from pkg import mod` imports the module pkg.mod; `from pkg import name` runs pkg
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for target in targets:
            found.append((target, id(node) in top))
    return found


def test_no_import_circle_in_the_data_room():
    modules = _modules()
    graph = {
        name: {t for t, _ in _imports(name, path, modules) if t in modules and t != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert "robopref.data.formats._common" in graph
    assert not {t for t in graph["robopref.data.formats._common"] if "formats" in t}


def test_no_function_local_import_of_robopref():
    """Imports inside functions are for heavy optional packages (pyarrow, av, PIL), never for
    robopref's own modules (that is how a circle hides)."""
    modules = _modules()
    local = [
        f"{path.relative_to(DATA.parent.parent)}: {target}"
        for name, path in modules.items()
        for target, at_top in _imports(name, path, modules)
        if not at_top and target.split(".")[0] == "robopref"
    ]
    assert not local, local


def test_public_names_stay_importable():
    from robopref.data import import_dataset, import_lerobot, import_robomimic  # noqa: F401
    from robopref.data.exporters import (  # noqa: F401
        PREFERENCES_TABLE,
        export_lerobot,
        export_robomimic,
        read_preferences,
    )
    from robopref.data.importers import (  # noqa: F401
        describe_source,
        detect_format,
        import_to_file,
    )
