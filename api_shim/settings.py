"""The shim's settings, from the environment (documented defaults; see the README's table)."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping

from lora_core.etcd_settings import EtcdSettings
from lora_core.settings import documentation, load_settings, setting


@dataclass(frozen=True)
class ShimSettings(EtcdSettings):  # ETCD_*: when set, status covers every node registered there (read access)
    triton_url: str = setting("TRITON_URL")
    triton_control_url: str = setting("TRITON_CONTROL_URL")
    triton_metrics_url: str = setting("TRITON_METRICS_URL")
    triton_timeout_s: int = setting("TRITON_TIMEOUT_S")
    triton_stall_s: int = setting("TRITON_STALL_S")
    control_token: str = setting("CONTROL_TOKEN")
    backend_state_file: str = setting("BACKEND_STATE_FILE")
    api_key: str = setting("API_KEY")
    max_texts_per_request: int = setting("MAX_TEXTS_PER_REQUEST")
    max_text_chars: int = setting("MAX_TEXT_CHARS")
    max_body_bytes: int = setting("MAX_BODY_BYTES")
    max_top_n: int = setting("MAX_TOP_N")
    max_batch_size: int = setting("MAX_BATCH_SIZE")
    predict_concurrency: int = setting("PREDICT_CONCURRENCY")
    coalesce_in_flight: int = setting("COALESCE_IN_FLIGHT")
    keepalive_linger_ms: int = setting("KEEPALIVE_LINGER_MS")
    predict_retries: int = setting("PREDICT_RETRIES")
    admission_max_wait_s: float = setting("ADMISSION_MAX_WAIT_S")
    node_status_timeout_s: float = setting("NODE_STATUS_TIMEOUT_S")

    def __post_init__(self) -> None:
        for name in (
            "triton_timeout_s",
            "triton_stall_s",
            "max_texts_per_request",
            "max_text_chars",
            "max_body_bytes",
            "max_top_n",
            "max_batch_size",
            "predict_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.upper()} must be >= 1, got {getattr(self, name)}")
        if self.coalesce_in_flight < 0:
            raise ValueError(f"COALESCE_IN_FLIGHT must be >= 0, got {self.coalesce_in_flight}")
        if self.keepalive_linger_ms < 0:
            raise ValueError(f"KEEPALIVE_LINGER_MS must be >= 0, got {self.keepalive_linger_ms}")
        if self.predict_retries < 0:
            raise ValueError(f"PREDICT_RETRIES must be >= 0, got {self.predict_retries}")
        if not self.admission_max_wait_s >= 0:
            raise ValueError(f"ADMISSION_MAX_WAIT_S must be >= 0, got {self.admission_max_wait_s}")
        if not self.node_status_timeout_s > 0:
            raise ValueError(f"NODE_STATUS_TIMEOUT_S must be > 0, got {self.node_status_timeout_s}")
        self.check_etcd()

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> ShimSettings:
        return load_settings(cls, None, environ)

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        return documentation(cls)
