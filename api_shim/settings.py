"""The shim's settings, from the environment (documented defaults; see the README's table)."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping

from lora_core.etcd_settings import EtcdSettings
from lora_core.settings import documentation, load_settings, setting


@dataclass(frozen=True)
class ShimSettings(EtcdSettings):  # ETCD_*: when set, status covers every node registered there (read access)
    triton_url: str = setting("TRITON_URL", "localhost:8010", "Triton's HTTP endpoint (host:port).")
    triton_control_url: str = setting(
        "TRITON_CONTROL_URL",
        "",
        "Where control operations go (host:port); empty: TRITON_URL. Behind HAProxy, its control frontend, which "
        "never retries a request that reached a node.",
    )
    triton_metrics_url: str = setting(
        "TRITON_METRICS_URL", "http://localhost:8012/metrics", "Triton's Prometheus metrics endpoint."
    )
    triton_timeout_s: int = setting("TRITON_TIMEOUT_S", "120", "Seconds to wait for one Triton call.")
    triton_stall_s: int = setting(
        "TRITON_STALL_S",
        "5",
        "A Triton call in flight this long makes new calls first check that Triton answers its health endpoint.",
    )
    control_token: str = setting(
        "CONTROL_TOKEN",
        "",
        "The secret Triton's lora_classifier requires on control operations (load, unload, list, status).",
    )
    backend_state_file: str = setting(
        "BACKEND_STATE_FILE", "", "Where `make serve`'s supervisor reports Triton's state (status says `starting`)."
    )
    api_key: str = setting("API_KEY", "", "When set, every /inference endpoint needs it (X-API-Key or Bearer).")
    max_texts_per_request: int = setting("MAX_TEXTS_PER_REQUEST", "1024", "Most texts in one predict request.")
    max_text_chars: int = setting("MAX_TEXT_CHARS", "100000", "Longest text accepted, in characters.")
    max_body_bytes: int = setting("MAX_BODY_BYTES", "16777216", "Largest request body accepted, in bytes.")
    max_top_n: int = setting("MAX_TOP_N", "1000", "Largest top_n accepted.")
    max_batch_size: int = setting("MAX_BATCH_SIZE", "64", "Largest batch_size accepted (Triton's max_batch_size).")
    predict_concurrency: int = setting("PREDICT_CONCURRENCY", "4", "Chunks of one predict request in flight at once.")
    coalesce_in_flight: int = setting(
        "COALESCE_IN_FLIGHT",
        "2",
        "Triton requests each shim worker keeps in flight for one-chunk predicts; predicts that arrive meanwhile "
        "wait and go together as the next request, each answered or failed alone (api_shim/coalescer.py). "
        "0: every predict goes alone.",
    )
    keepalive_linger_ms: int = setting(
        "KEEPALIVE_LINGER_MS",
        "30",
        "How long a gunicorn thread waits for a kept-alive connection's next request, while another thread is free, "
        "before handing the connection back to its worker's poller (api_shim/worker.py). 0: at once.",
    )
    predict_retries: int = setting(
        "PREDICT_RETRIES", "2", "Times a predict is sent again after Triton was unreachable or not ready (idempotent)."
    )
    admission_max_wait_s: float = setting(
        "ADMISSION_MAX_WAIT_S",
        "1",
        "A predict that would wait longer than this (seconds) behind the work in flight is refused at once with "
        "429 overloaded and Retry-After; 0 admits everything (api_shim/admission.py).",
    )
    node_status_timeout_s: float = setting(
        "NODE_STATUS_TIMEOUT_S", "1", "Longest wait for one node's answer in status; a node slower is `unreachable`."
    )

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
