"""The engine's and the Triton model's settings (the machinery, shared with the shim, is lora_core.settings).

Each setting has a fixed environment name (operators and tools rely on it), a documented default, and
may also come from a mapping of parameters (Triton's config.pbtxt). Precedence: environment, then
parameters, then the default. Values are validated once, naming the setting that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lora_core.etcd_settings import EtcdSettings
from lora_core.settings import documentation, load_settings, setting

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Settings(EtcdSettings):  # ETCD_*: where the desired state of several nodes lives (empty: STATE_DIR)
    base_model_dir: Path = setting("BASE_MODEL_DIR")
    models_root: Path = setting("MODELS_ROOT")
    state_dir: Path = setting("STATE_DIR")
    max_adapters: int = setting("MAX_ADAPTERS")
    device: str = setting("DEVICE")
    dtype: str = setting("DTYPE")
    torch_threads: int = setting("TORCH_THREADS")
    max_text_chars: int = setting("MAX_TEXT_CHARS")
    memory_trim_seconds: int = setting("MEMORY_TRIM_SECONDS")
    models_index_seconds: float = setting("MODELS_INDEX_SECONDS")
    max_batch_tokens: int = setting("MAX_BATCH_TOKENS")
    control_token: str = setting("CONTROL_TOKEN")

    def __post_init__(self) -> None:
        if self.max_adapters < 1:
            raise ValueError(f"MAX_ADAPTERS must be >= 1, got {self.max_adapters}")
        if self.max_batch_tokens < 1:
            raise ValueError(f"MAX_BATCH_TOKENS must be >= 1, got {self.max_batch_tokens}")
        if self.device not in DEVICES and not _is_cuda_index(self.device):
            raise ValueError(f"DEVICE must be one of {', '.join(DEVICES)} (or cuda:N), got {self.device!r}")
        if self.torch_threads < 0:
            raise ValueError(f"TORCH_THREADS must be >= 0, got {self.torch_threads}")
        if self.max_text_chars < 1:
            raise ValueError(f"MAX_TEXT_CHARS must be >= 1, got {self.max_text_chars}")
        if self.memory_trim_seconds < 0:
            raise ValueError(f"MEMORY_TRIM_SECONDS must be >= 0, got {self.memory_trim_seconds}")
        if not self.models_index_seconds > 0:
            raise ValueError(f"MODELS_INDEX_SECONDS must be > 0, got {self.models_index_seconds}")
        self.check_etcd()
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
