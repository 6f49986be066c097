"""The settings machinery: every setting is defined once, in lora_core.settings_registry; a frozen dataclass per
component names the settings it reads (`setting("NAME")`), and `load_settings` fills it: each field from its
environment variable, then from a mapping of parameters (Triton's config.pbtxt), then from the registry's default.
Scripts that read a setting or two use `read`. Values are converted on the registry's type, once, naming the
setting that is wrong; a field whose type is not the registry's is a programming error, raised at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from .settings_registry import KINDS, REGISTRY, Setting

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def setting(env: str) -> Any:
    """A dataclass field read from the registered setting `env` (see `load_settings`)."""
    return field(metadata={"env": env})


T = TypeVar("T", bound="DataclassInstance")


def read(
    name: str,
    environ: Mapping[str, str] | None = None,
    parameters: Mapping[str, str] | None = None,
    registry: Mapping[str, Setting] = REGISTRY,
) -> Any:
    """The setting `name`, converted to its registered type: from the environment (unset or empty: not set), then
    `parameters`, then its registered default."""
    entry = registry[name]  # a KeyError here is a name missing from the registry: a programming error
    environ = os.environ if environ is None else environ
    raw = environ.get(name) or (parameters or {}).get(name) or entry.default
    return _convert(name, raw.strip(), KINDS[entry.kind])


def load_settings(
    cls: type[T],
    parameters: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    registry: Mapping[str, Setting] = REGISTRY,
) -> T:
    """Build a settings dataclass: each field from its environment variable, then `parameters`, then its default."""
    types = get_type_hints(cls)  # the real types: with `from __future__ import annotations`, f.type is a string
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = f.metadata["env"]
        kind = KINDS.get(registry[name].kind)
        if kind is not types[f.name]:
            raise TypeError(f"setting {name}: the field is {types[f.name]!r}, the registry says {registry[name].kind}")
        values[f.name] = read(name, environ, parameters, registry)
    return cls(**values)


def documentation(cls: type, registry: Mapping[str, Setting] = REGISTRY) -> list[tuple[str, str, str]]:
    """(environment name, default, help) for every field of a settings dataclass."""
    entries = [registry[f.metadata["env"]] for f in fields(cls)]
    return [(e.name, e.default, e.help) for e in entries]


def _convert(name: str, raw: str, kind: Any) -> Any:
    """`raw` as the setting's type; a type with no conversion here is a programming error, raised at once."""
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
    raise TypeError(f"setting {name}: no conversion for the type {kind!r}")
