"""Typed configs: pydantic models read from YAML, with dotted command-line overrides.

Every recipe defines a ``pydantic.BaseModel`` config; :func:`load_config` reads a YAML file,
applies overrides such as ``train.lr=3e-4`` or ``tasks=[a,b]`` (values parsed as YAML) and
validates the result, so a typo in a key or a wrong type fails before any work starts.
:func:`save_config` writes the resolved config next to a run's results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from robopref.utils import atomic_path

C = TypeVar("C", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for all robopref configs: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError):
    """A config file or override that does not match the recipe's typed config."""


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def _yaml_problem(e: yaml.YAMLError) -> str:
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
    data = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        where = f"command line override '{item}'"
        if "=" not in item:
            raise ConfigError(f"{where}: expected the form key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{where}: expected a dotted key like a.b, found '{key}'")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(
                f"{where}: the value is not valid YAML ({_yaml_problem(e)})"
            ) from None
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
    """Read ``path`` (YAML; optional) into a dict and apply ``overrides``, without validating.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML or not a mapping, or an
            override is malformed; one line naming the file (and line) or the override.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
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
            raise ConfigError(f"config file '{path}': {_yaml_problem(e)}") from None
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
    set it, else the config file ``source``."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        parts = [_describe_error(cls, err, source, overrides) for err in errors[:3]]
        if len(errors) > 3:
            parts.append(f"and {len(errors) - 3} more problem(s)")
        raise ConfigError("; ".join(parts)) from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (YAML; optional), apply ``overrides`` and validate into ``cls``."""
    source = str(path) if path is not None else "<defaults>"
    return validate_config(cls, read_config_data(path, overrides), source, overrides)


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write ``config`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
