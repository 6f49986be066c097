"""Settings, in one place.

Each setting has a fixed environment name (operators and tools rely on it), a documented default, and
may also come from a mapping of parameters (Triton's config.pbtxt). Precedence: environment, then
parameters, then the default. Values are validated once, naming the setting that is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")


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


@dataclass(frozen=True)
class Settings:
    base_model_dir: Path = setting(
        "BASE_MODEL_DIR", "/models/base", "Local Hugging Face encoder directory (config, weights, tokenizer)."
    )
    models_root: Path = setting(
        "MODELS_ROOT", "/models/outputs", "Directory holding the training outputs; every model_dir is inside it."
    )
    state_dir: Path = setting(
        "STATE_DIR", "/var/lib/lora-classifier", "Where the desired-state manifest of loaded adapters is kept."
    )
    max_adapters: int = setting("MAX_ADAPTERS", "1024", "Most adapters resident at once (>= 1).")
    device: str = setting("DEVICE", "auto", "auto | cpu | cuda; auto picks cuda when a GPU is visible.")
    dtype: str = setting(
        "DTYPE", "auto", "auto | float32 | float16 | bfloat16; auto is float32 on CPU and float16 on CUDA."
    )
    torch_threads: int = setting(
        "TORCH_THREADS", "0", "Intra-op threads per CPU model instance; 0 shares the cores among the instances."
    )
    max_text_chars: int = setting(
        "MAX_TEXT_CHARS", "100000", "Longest text accepted, in characters (longer ones are payload_too_large)."
    )
    memory_trim_seconds: int = setting(
        "MEMORY_TRIM_SECONDS", "10", "Every this many seconds, return freed heap memory to the OS (glibc); 0: never."
    )
    control_token: str = setting(
        "CONTROL_TOKEN", "", "Shared secret every control operation must carry; unset: all control is refused."
    )

    def __post_init__(self) -> None:
        if self.max_adapters < 1:
            raise ValueError(f"MAX_ADAPTERS must be >= 1, got {self.max_adapters}")
        if self.device not in DEVICES and not _is_cuda_index(self.device):
            raise ValueError(f"DEVICE must be one of {', '.join(DEVICES)} (or cuda:N), got {self.device!r}")
        if self.torch_threads < 0:
            raise ValueError(f"TORCH_THREADS must be >= 0, got {self.torch_threads}")
        if self.max_text_chars < 1:
            raise ValueError(f"MAX_TEXT_CHARS must be >= 1, got {self.max_text_chars}")
        if self.memory_trim_seconds < 0:
            raise ValueError(f"MEMORY_TRIM_SECONDS must be >= 0, got {self.memory_trim_seconds}")
        if self.dtype not in DTYPES:
            raise ValueError(f"DTYPE must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @classmethod
    def load(cls, parameters: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting: environment first, then `parameters`, then the documented default."""
        return load_settings(cls, parameters, environ)

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(environment name, default, help) for every setting, for docs and `--help` output."""
        return documentation(cls)


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


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
