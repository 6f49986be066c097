"""An unpickler for label maps that builds only built-in containers, strings and numbers.

Plain lists, tuples, dicts, strings and numbers are pickle opcodes and need no global at all. Any
pickle that names a global (a class, a function, `os.system`, ...) is refused in `find_class`,
before the global is even imported, so its payload never runs.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

# Containers that pickle through a global but are plain data.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle named a global outside the allowlist."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise ForbiddenGlobal(f"names the global {module}.{name}, which is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("uses persistent ids, which are not allowed")


def restricted_loads(data: bytes) -> Any:
    """Unpickle `data` allowing only built-in containers, strings and numbers."""
    return RestrictedUnpickler(io.BytesIO(data)).load()
