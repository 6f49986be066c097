"""Serve many LoRA text classifiers over one resident base encoder. Never imports Triton.

Exports are resolved lazily so that light modules (`errors`, `settings`, `layout`) can be used without
importing torch: the REST shim relies on that.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "AdapterEngine": "engine",
    "Classification": "engine",
    "LoadResult": "engine",
    "ResidentAdapter": "engine",
    "AdapterError": "errors",
    "Settings": "settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adapter_manager' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
