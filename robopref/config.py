"""Typed configs: pydantic models read from YAML, with dotted command-line overrides.

Every recipe defines a ``pydantic.BaseModel`` config; :func:`load_config` reads a YAML file,
applies overrides such as ``train.lr=3e-4`` or ``tasks=[a,b]`` (values parsed as YAML) and
validates the result, so a typo in a key or a wrong type fails before any work starts.
:func:`save_config` writes the resolved config next to a run's results.

Configs ship inside the package (``robopref/configs/``): :func:`resolve_config_path` turns a
name such as ``pearl/base`` into its file, so they work from any folder and any install. A field
typed :data:`InputPath` (a file the run reads) that is relative in a config file resolves against
that file's folder; the same field given as a command-line override stays relative to the
working directory.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from robopref.utils import atomic_path

C = TypeVar("C", bound=BaseModel)
T = TypeVar("T")

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
"""The configs shipped with the package; :func:`resolve_config_path` finds names in it."""


class StrictModel(BaseModel):
    """Base for all robopref configs: unknown keys are errors, not silently ignored; a
    docstring right under a field is its description (``robopref config show`` prints it)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


class ConfigError(ValueError):
    """A config file or override that does not match the recipe's typed config."""


class _InputPathMarker:
    """Marks a ``str`` field as a file the run reads (see :data:`InputPath`)."""

    def __repr__(self) -> str:
        return "InputPath"


_INPUT_PATH = _InputPathMarker()

InputPath = Annotated[str, _INPUT_PATH]
"""A path the run reads: relative in a config file, it resolves against the file's folder."""


def packaged_configs() -> list[str]:
    """The names of the configs shipped with the package, e.g. ``pearl/base``."""
    return sorted(
        p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.rglob("*.yaml")
    )


def _packaged_candidate(name: str) -> Path:
    """Where the packaged config named ``name`` would be (``pearl/base`` -> ``.../pearl/base.yaml``)."""
    rel = name.replace("\\", "/").removeprefix("./")
    for prefix in ("robopref/configs/", "configs/"):
        rel = rel.removeprefix(prefix)
    return CONFIGS_DIR / (rel if rel.endswith((".yaml", ".yml")) else rel + ".yaml")


def resolve_config_path(name: str | Path, what: str = "config file") -> Path:
    """The config file that ``name`` means: an existing path wins; otherwise a relative name like
    ``pearl/base``, ``pearl/base.yaml`` or ``configs/pearl/base.yaml`` names a packaged config.

    Raises:
        ConfigError: neither exists; one line (starting with ``what``) saying where it looked.
    """
    path = Path(name)
    if path.exists():
        return path
    if path.is_absolute():
        raise ConfigError(f"{what} '{name}' does not exist")
    candidate = _packaged_candidate(str(name))
    if candidate.is_file():
        return candidate
    # list the configs of the folder it names, else the folders
    folder = candidate.relative_to(CONFIGS_DIR).parts[0]
    names = [n for n in packaged_configs() if n.split("/")[0] == folder] or packaged_configs()
    if len(names) > 12:
        names = sorted({n.split("/")[0] + "/..." for n in names})
    raise ConfigError(
        f"{what} '{name}' does not exist (looked at {path.absolute()} and {candidate}); "
        f"packaged configs: {', '.join(names)}"
    )


def _annotation_has_input_path(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return any(m is _INPUT_PATH for m in annotation.__metadata__)
    return any(_annotation_has_input_path(a) for a in typing.get_args(annotation))


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes inside ``annotation`` (itself, or members of a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, Annotated):
        return [m for a in typing.get_args(annotation) for m in _model_types(a)]
    return []


def _resolve_input_paths(
    cls: type[BaseModel], data: Any, folder: Path, overridden: list[str], prefix: str = ""
) -> None:
    """In place: make the relative :data:`InputPath` values of ``data`` (read from a config file
    in ``folder``) absolute, except those set by a command-line override (keys ``overridden``)."""
    if not isinstance(data, dict):
        return
    for name, field in cls.model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        loc = f"{prefix}{key}"
        if any(loc == o or loc.startswith(o + ".") for o in overridden):
            continue
        value = data[key]
        if _annotation_has_input_path(field.annotation) or any(
            m is _INPUT_PATH for m in field.metadata
        ):
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                data[key] = os.path.normpath(folder / value)
        for model in _model_types(field.annotation):
            _resolve_input_paths(model, value, folder, overridden, loc + ".")


#: Deepest nesting of lists and mappings a config may have (real configs use < 10); deeper
#: input would exhaust Python's recursion limit in YAML, pydantic or the saved config.
MAX_DEPTH = 64
#: Seeds go to ``random``, numpy (``np.random.seed`` takes < 2**32) and torch.
SEED_LIMIT = 2**32


def _strict_seed(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer seed in [0, 2**32), not {type(value).__name__}")
    if not 0 <= value < SEED_LIMIT:
        raise ValueError("expected an integer seed in [0, 2**32)")
    return value


Seed = Annotated[int, BeforeValidator(_strict_seed)]
"""A seed every seeding function takes: an int (not a bool, float or string) in [0, 2**32)."""

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,4})?)$")


def _check_device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError("expected a device: auto, cpu, cuda, cuda:N or mps")
    # The configs with a device belong to torch trainers, whose modules have imported torch;
    # this module stays free of torch (rooms without torch use it).
    torch = sys.modules.get("torch")
    if torch is None:
        return value
    if value.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.partition(":")[2] or 0)
        if index >= count:
            raise ValueError(
                f"expected an available device ({count} CUDA device(s) here"
                + ("" if count else f"; torch {torch.__version__} is a CPU build or sees no GPU")
                + "; use device=auto or cpu)"
            )
    elif value == "mps" and not torch.backends.mps.is_available():
        raise ValueError("expected an available device (no MPS here; use device=auto or cpu)")
    return value


Device = Annotated[str, AfterValidator(_check_device)]
"""A torch device name that exists on this machine: auto (CUDA when present), cpu, cuda,
cuda:N or mps."""


def _distinct(values: list) -> list:
    if not values:
        raise ValueError("expected at least one entry")
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    if twice:
        raise ValueError(f"expected each entry once ({twice[0]!r} is repeated)")
    return values


Distinct = Annotated[list[T], AfterValidator(_distinct)]
"""A non-empty list without repeated entries: ``variants: Distinct[Variant]``."""


def _depth(value: Any) -> int:
    """Nesting depth of lists/mappings in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _safe_load(text: Any, where: str) -> Any:
    """``yaml.safe_load`` that reports input nested deeper than :data:`MAX_DEPTH` as a
    :class:`ConfigError` instead of a RecursionError."""
    try:
        value = yaml.safe_load(text)
    except RecursionError:
        value = None
        deep = True
    else:
        deep = _depth(value) > MAX_DEPTH
    if deep:
        raise ConfigError(
            f"{where}: expected lists and mappings nested at most {MAX_DEPTH} deep, found deeper"
        )
    return value


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def yaml_problem(e: yaml.YAMLError) -> str:
    """One line describing a YAML error: the problem and where (1-based line and column)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).split("\n")[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"YAML syntax error{where}: {problem}"


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``dotted.key=value`` override applied.

    Raises:
        ConfigError: an override is not ``key=value``, its value is not valid YAML, or it
            descends into a key that is not a section; the message quotes the override.
    """
    data = copy.deepcopy(data) or {}
    for item in overrides:
        where = f"command line override '{item}'"
        if "=" not in item:
            raise ConfigError(f"{where}: expected the form key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{where}: expected a dotted key like a.b, found '{key}'")
        if len(parts) > MAX_DEPTH:
            raise ConfigError(f"{where}: expected a key at most {MAX_DEPTH} levels deep")
        try:
            value = _safe_load(raw, where) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: the value is not valid YAML ({yaml_problem(e)})") from None
        node = data
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{where}: '{part}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def read_config_data(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Read ``path`` (YAML; optional; a file or a packaged config's name, see
    :func:`resolve_config_path`) into a dict and apply ``overrides``, without validating.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML or not a mapping, or an
            override is malformed; one line naming the file (and line) or the override.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = _safe_load(f, f"config file '{path}'") or {}
        except FileNotFoundError:
            raise ConfigError(f"config file '{path}' does not exist") from None
        except IsADirectoryError:
            raise ConfigError(
                f"config file '{path}': expected a YAML file, found a directory"
            ) from None
        except OSError as e:
            raise ConfigError(f"config file '{path}': cannot read it ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"config file '{path}': expected UTF-8 text, found {e.reason}"
            ) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}': {yaml_problem(e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file '{path}': expected a mapping at the top level, "
                f"found {type(data).__name__}"
            )
    return apply_overrides(data, overrides)


def _origin(loc: str, source: str, overrides: Sequence[str]) -> str:
    """Where the value at dotted ``loc`` came from: the last override that set it (or a key
    inside it, or the section holding it), else the config file."""
    for item in reversed(overrides):
        key = _override_key(item)
        if loc and (loc == key or loc.startswith(key + ".") or key.startswith(loc + ".")):
            return f"command line override '{item}'"
    if not loc and overrides:
        return f"config '{source}' with command line overrides {' '.join(overrides)}"
    return f"config '{source}'"


def _field_names(cls: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names of the (sub)model at ``loc`` inside ``cls``, or None if not a model."""
    model: Any = cls
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return None
        model = fields[part].annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields is not None else None


def _describe_error(cls: type[BaseModel], err: dict[str, Any], source: str, overrides) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    origin = _origin(loc, source, overrides)
    if err["type"] == "extra_forbidden":
        names = _field_names(cls, err["loc"][:-1])
        expected = f" (expected one of: {', '.join(names)})" if names else ""
        return f"{origin}: unknown key '{loc}'{expected}"
    msg = err["msg"].removeprefix("Value error, ")
    found = repr(err["input"])
    found = found if len(found) <= 60 else found[:57] + "..."
    if not loc:  # a check across fields: the message says what it compared
        return f"{origin}: {cls.__name__}: {msg}"
    return f"{origin}: field '{loc}': {msg}, found {found}"


def validate_config(
    cls: type[C], data: dict[str, Any], source: str = "<defaults>", overrides: Sequence[str] = ()
) -> C:
    """Validate ``data`` into ``cls``; a mismatch raises :class:`ConfigError`: one line per
    problem (joined by "; "), each naming the field and the override of ``overrides`` that
    set it, else the config file ``source``. Relative :data:`InputPath` fields that came from
    the file ``source`` resolve against its folder."""
    folder = _config_folder(source)
    if folder is not None:
        data = copy.deepcopy(data) or {}
        _resolve_input_paths(cls, data, folder, [_override_key(o) for o in overrides])
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        parts = [_describe_error(cls, err, source, overrides) for err in errors[:3]]
        if len(errors) > 3:
            parts.append(f"and {len(errors) - 3} more problem(s)")
        raise ConfigError("; ".join(parts)) from None


def _config_folder(source: str) -> Path | None:
    """The absolute folder of the config file ``source``, or None when it names no file."""
    if source.startswith("<"):
        return None
    try:
        return resolve_config_path(source).resolve().parent
    except ConfigError:
        return None


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (YAML; optional), apply ``overrides`` and validate into ``cls``."""
    source = str(path) if path is not None else "<defaults>"
    return validate_config(cls, read_config_data(path, overrides), source, overrides)


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write ``config`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def _plain(doc: str) -> str:
    """A docstring as one line of plain text: ``x`` and :role:`x` become `x`."""
    doc = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", doc)
    return " ".join(doc.replace("``", "`").split())


def describe_config(config: BaseModel, indent: int = 0) -> str:
    """``config`` as YAML with each field's description (its docstring) as a ``# ...`` comment
    above its key; fields without one are listed too. Reading it back gives the same config."""
    pad = " " * indent
    values = config.model_dump(mode="json")
    lines: list[str] = []
    for name, field in type(config).model_fields.items():
        if field.description:
            text = _plain(field.description)
            lines += [f"{pad}# {w}" for w in textwrap.wrap(text, width=max(40, 98 - indent))]
        value = getattr(config, name)
        if isinstance(value, BaseModel) and type(value).model_fields:
            lines.append(f"{pad}{name}:")
            lines.append(describe_config(value, indent + 2))
            continue
        # flow style keeps a list or a mapping of values on the key's line
        text = yaml.safe_dump(values[name], default_flow_style=True, width=10**6, sort_keys=False)
        text = text.rstrip("\n").removesuffix("\n...")
        lines.append(f"{pad}{name}: {text}")
    return "\n".join(lines)
