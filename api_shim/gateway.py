"""TritonGateway: everything the shim asks of Triton, with Triton's failures turned into domain errors.

tritonclient's HTTP client is not thread safe, so each thread gets its own (gunicorn runs threaded
workers). Chunks of one predict request go out concurrently through the client's own connection pool
(`async_infer`), bounded by PREDICT_CONCURRENCY, and come back in order.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Sequence

import gevent
import numpy as np
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from adapter_manager.errors import AdapterError, BackendUnavailable, InternalError, from_wire

MODEL = "lora_classifier"
# What a failed connection to Triton raises (refused, reset, closed mid-response, timed out). Anything else
# is a bug of ours and must not be reported as Triton being unavailable.
TRANSPORT_ERRORS = (OSError, HTTPException, gevent.Timeout)


@dataclass(frozen=True)
class Prediction:
    """One text's result: labels in the label map's order and their probabilities."""

    labels: tuple[str, ...]
    probabilities: tuple[float, ...]


class TritonGateway:
    def __init__(self, url: str, timeout_s: float = 120, concurrency: int = 4, model: str = MODEL) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.model = model
        self._local = threading.local()

    @property
    def _client(self) -> triton_http.InferenceServerClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = triton_http.InferenceServerClient(
                self.url, concurrency=self.concurrency, connection_timeout=min(10.0, self.timeout_s),
                network_timeout=self.timeout_s,
            )
            self._local.client = client
        return client

    def _reset(self) -> None:
        """Drop this thread's client after a connection failure, so the next call reconnects."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken client must not hide the original failure
                pass

    # ------------------------------------------------------------------------------ data plane

    def predict(self, chunks: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[list[Prediction]]:
        """Send each (texts, model_ids) chunk as one request, all in flight together; results in order."""
        if len(chunks) == 1:  # the common case: a plain call, without the client's greenlet pool
            inputs, outputs = self._predict_request(*chunks[0])
            return [self._predictions(self._call(lambda: self._client.infer(self.model, inputs, outputs=outputs)))]
        pending = [self._call(lambda c=chunk: self._submit(*c)) for chunk in chunks]
        return [self._predictions(self._call(request.get_result)) for request in pending]

    def _submit(self, texts: Sequence[str], model_ids: Sequence[str]):
        inputs, outputs = self._predict_request(texts, model_ids)
        return self._client.async_infer(self.model, inputs, outputs=outputs)

    @staticmethod
    def _predict_request(texts: Sequence[str], model_ids: Sequence[str]):
        inputs = []
        for name, values in (("TEXT", texts), ("MODEL_ID", model_ids)):
            tensor = triton_http.InferInput(name, [len(values), 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[v.encode("utf-8")] for v in values], dtype=object), binary_data=True)
            inputs.append(tensor)
        outputs = [triton_http.InferRequestedOutput(n, binary_data=True) for n in ("PROBABILITIES", "LABELS", "NUM_LABELS")]
        return inputs, outputs

    @staticmethod
    def _predictions(result) -> list[Prediction]:
        probabilities = result.as_numpy("PROBABILITIES")
        labels = result.as_numpy("LABELS")
        counts = result.as_numpy("NUM_LABELS")[:, 0]
        return [
            Prediction(
                labels=tuple(labels[row, i].decode("utf-8") for i in range(count)),
                probabilities=tuple(float(p) for p in probabilities[row, :count]),
            )
            for row, count in enumerate(counts)
        ]

    # --------------------------------------------------------------------------- control plane

    def control(self, document: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(document, ensure_ascii=False).encode("utf-8")
        tensor = triton_http.InferInput("CONTROL", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[payload]], dtype=object), binary_data=True)
        output = triton_http.InferRequestedOutput("CONTROL_RESULT", binary_data=True)
        result = self._call(lambda: self._client.infer(self.model, [tensor], outputs=[output]))
        return json.loads(result.as_numpy("CONTROL_RESULT")[0][0])

    # ------------------------------------------------------------------------------ inspection

    def model_state(self) -> str:
        """READY, LOADING, UNAVAILABLE (failed) or UNKNOWN, from Triton's repository index."""
        index = self._call(lambda: self._client.get_model_repository_index())
        for entry in index:
            if entry.get("name") == self.model:
                return entry.get("state", "UNKNOWN") or "UNKNOWN"
        return "UNKNOWN"

    def model_ready(self) -> bool:
        return bool(self._call(lambda: self._client.is_model_ready(self.model)))

    def model_config(self) -> dict[str, Any]:
        return self._call(lambda: self._client.get_model_config(self.model))

    # -------------------------------------------------------------------------------- failures

    def _call(self, fn):
        try:
            return fn()
        except InferenceServerException as exc:
            raise self._domain_error(exc) from exc
        except TRANSPORT_ERRORS as exc:
            self._reset()
            raise BackendUnavailable(f"Triton is unreachable at {self.url}: {type(exc).__name__}") from exc

    def _domain_error(self, exc: InferenceServerException) -> AdapterError:
        message = exc.message() or str(exc)
        error = from_wire(message)
        if error is not None:
            return error
        if exc.status() in (None, "None") or "unavailable" in message.lower() or "not ready" in message.lower() or "unknown model" in message.lower():
            self._reset()
            return BackendUnavailable(f"Triton cannot serve {self.model} now: {message[:300]}")
        return InternalError(f"Triton answered an unexpected error: {message[:300]}")
