"""The settings machinery: a frozen dataclass per component, each field read from a fixed environment variable
(operators and tools rely on the names), then from a mapping of parameters (Triton's config.pbtxt), then from
its documented default. Values are converted on the field's real type, once, naming the setting that is
wrong; a field of a type with no conversion is a programming error, raised at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def setting(env: str, default: str, help: str) -> Any:
    """A dataclass field read from the environment variable `env` (see `load_settings`)."""
    return field(metadata={"env": env, "default": default, "help": help})


T = TypeVar("T", bound="DataclassInstance")


def load_settings(
    cls: type[T], parameters: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> T:
    """Build a settings dataclass: each field from its environment variable, then `parameters`, then its default."""
    environ = os.environ if environ is None else environ
    parameters = parameters or {}
    values: dict[str, Any] = {}
    types = get_type_hints(cls)  # the real types: with `from __future__ import annotations`, f.type is a string
    for f in fields(cls):
        name = f.metadata["env"]
        raw = environ.get(name) or parameters.get(name) or f.metadata["default"]
        values[f.name] = _convert(name, raw.strip(), types[f.name])
    return cls(**values)


def documentation(cls: type) -> list[tuple[str, str, str]]:
    """(environment name, default, help) for every field of a settings dataclass."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["help"]) for f in fields(cls)]


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _convert(name: str, raw: str, kind: Any) -> Any:
    """`raw` as the field's type; a type with no conversion here is a programming error, raised at once."""
    if kind is str:
        return raw
    if kind is Path:
        return Path(raw).expanduser()
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if kind is bool:
        if raw.lower() not in _BOOLEANS:
            raise ValueError(f"{name} must be true or false, got {raw!r}")
        return _BOOLEANS[raw.lower()]
    raise TypeError(f"setting {name}: no conversion for the type {kind!r}")
