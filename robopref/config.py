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


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``dotted.key=value`` override applied."""
    data = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected the form key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def read_config_data(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Read ``path`` (YAML; optional) into a dict and apply ``overrides``, without validating."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file '{path}' does not exist") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}': expected a mapping at the top level")
    return apply_overrides(data, overrides)


def validate_config(cls: type[C], data: dict[str, Any], source: str = "<defaults>") -> C:
    """Validate ``data`` into ``cls``; a mismatch raises :class:`ConfigError` naming ``source``."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"config '{source}' does not match {cls.__name__}:\n{e}") from e


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (YAML; optional), apply ``overrides`` and validate into ``cls``."""
    source = str(path) if path is not None else "<defaults>"
    return validate_config(cls, read_config_data(path, overrides), source)


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write ``config`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
