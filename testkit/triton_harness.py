"""Test harness for a real tritonserver (started through scripts/run_triton.py) and a small client for
the lora_classifier model. Every test talks HTTP to the real server."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
import requests
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from lora_core.control_token import RESTRICTED_API_HEADER, TOKEN_FIELD
from lora_core.errors import AdapterError, from_wire
from lora_core.prometheus import MetricsSnapshot
from testkit.conditions import wait_for
from testkit.process_harness import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]
MODEL = "lora_classifier"
# The control secret of every test and benchmark tritonserver, and what their clients send. A benchmark run
# against a server started elsewhere takes that server's from the environment.
CONTROL_TOKEN = os.environ.get("CONTROL_TOKEN") or secrets.token_urlsafe(24)


def server_settings(base: Path, models_root: Path, state_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a test or benchmark tritonserver: these paths, float32, the control secret, and any
    other settings."""
    return {
        "BASE_MODEL_DIR": str(base),
        "MODELS_ROOT": str(models_root),
        "STATE_DIR": str(state_dir),
        "DTYPE": "float32",
        "CONTROL_TOKEN": CONTROL_TOKEN,
        "MODELS_INDEX_SECONDS": "1",  # tests wait for the listing to see a new output; 1 s keeps that short
        **settings,
    }


class TritonServer:
    """One tritonserver process; `restart()` keeps its environment (and so its STATE_DIR)."""

    def __init__(self, workdir: Path, env: dict[str, str], instances: int | str = 1) -> None:
        self.workdir = workdir
        self.env = {**os.environ, **env}
        self.instances = instances
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.server = ManagedProcess(workdir / "tritonserver.log")

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def control_token(self) -> str:
        return self.env.get("CONTROL_TOKEN", "")

    def shim_settings(self) -> dict[str, str]:
        """What a shim needs to reach this server: its URLs and its control secret."""
        return {
            "TRITON_URL": self.url,
            "TRITON_METRICS_URL": f"http://127.0.0.1:{self.metrics_port}/metrics",
            "CONTROL_TOKEN": self.control_token,
        }

    @property
    def ready_url(self) -> str:
        return f"http://{self.url}/v2/models/{MODEL}/ready"

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(REPO / "scripts" / "run_triton.py"),
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--instances={self.instances}",
            "--kind=cpu",
            f"--run-dir={self.workdir / 'run'}",
        ]

    def start(self, timeout: float = 180) -> None:
        self.server.start(self.command(), self.env, self.ready_url, timeout)

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
        samples = MetricsSnapshot(self.metrics()).samples
        return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def statistics(self) -> dict[str, int]:
        headers = {RESTRICTED_API_HEADER: self.control_token}  # a restricted API
        stats = requests.get(f"http://{self.url}/v2/models/{MODEL}/stats", headers=headers, timeout=5).json()[
            "model_stats"
        ][0]
        return {"requests": stats["inference_stats"]["success"]["count"], "executions": stats["execution_count"]}


class LoraClient:
    """The lora_classifier protocol: CONTROL documents and TEXT/MODEL_ID predictions."""

    def __init__(self, url: str, token: str = CONTROL_TOKEN) -> None:
        self.client = triton_http.InferenceServerClient(url, network_timeout=120)
        self.token = token

    def control(self, document: Any, raw: bytes | None = None) -> dict[str, Any]:
        """Send `document` with this client's secret added (a dict), or `raw` bytes as they are."""
        if isinstance(document, dict):
            document = {**document, TOKEN_FIELD: self.token}
        payload = raw if raw is not None else json.dumps(document).encode()
        tensor = triton_http.InferInput("CONTROL", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[payload]], dtype=object))
        result = self._infer([tensor], ["CONTROL_RESULT"])
        return json.loads(result.as_numpy("CONTROL_RESULT")[0][0])

    def predict(self, texts: Sequence[str], model_ids: Sequence[str]) -> list[dict[str, float]]:
        inputs = []
        for name, values in (("TEXT", texts), ("MODEL_ID", model_ids)):
            tensor = triton_http.InferInput(name, [len(values), 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[v.encode()] for v in values], dtype=object))
            inputs.append(tensor)
        result = self._infer(inputs, ["PROBABILITIES", "LABELS", "NUM_LABELS"])
        probabilities, labels = result.as_numpy("PROBABILITIES"), result.as_numpy("LABELS")
        rows = []
        for row, count in enumerate(result.as_numpy("NUM_LABELS")[:, 0]):
            rows.append({labels[row, i].decode(): float(probabilities[row, i]) for i in range(count)})
        return rows

    def _infer(self, inputs, outputs):
        try:
            return self.client.infer(MODEL, inputs, outputs=[triton_http.InferRequestedOutput(n) for n in outputs])
        except InferenceServerException as exc:
            error = from_wire(exc.message() or "")
            if error is None:
                raise
            raise error from exc

    def loaded(self) -> list[str]:
        return [m["model_id"] for m in self.control({"op": "list"})["models"] if m["status"] == "loaded"]

    def listed(self) -> dict[str, str]:
        """model_id -> status, for every model the listing shows."""
        return {m["model_id"]: m["status"] for m in self.control({"op": "list"})["models"]}

    def wait_listed(self, model_ids: Sequence[str], status: str | None, timeout: float = 30) -> None:
        """Wait until the listing shows each of `model_ids` with `status` (None: not at all); the unloaded
        part of the listing comes from an index refreshed every MODELS_INDEX_SECONDS."""
        wait_for(
            lambda: all(self.listed().get(m) == status for m in model_ids), timeout, f"{model_ids} listed as {status}"
        )

    def close(self) -> None:
        self.client.close()


def expect_error(code: str, fn, *args, **kwargs) -> AdapterError:
    try:
        fn(*args, **kwargs)
    except AdapterError as exc:
        assert exc.code == code, f"expected {code}, got {exc.code}: {exc.message}"
        return exc
    raise AssertionError(f"expected {code}, but the call succeeded")
