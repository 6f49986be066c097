"""TritonGateway: everything the shim asks of Triton, with Triton's failures turned into domain errors.

A one-chunk predict (the common case, coalesced with its neighbours) goes out over a plain keep-alive
connection of the calling thread (api_shim/infer_wire.py); everything else through tritonclient. Neither is
thread safe, so each thread gets its own (gunicorn runs threaded workers). Chunks of one predict request go out
concurrently through tritonclient's own connection pool (`async_infer`), bounded by PREDICT_CONCURRENCY, and
come back in order.

Every control document carries the shared CONTROL_TOKEN, and every call to one of Triton's restricted APIs
(repository index, model config) carries it in a header: without it Triton refuses both. A BackendWatch
makes calls to a dead or hung Triton fail fast.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any
from collections.abc import Sequence

import gevent
import numpy as np
import requests
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from lora_core.control_token import RESTRICTED_API_HEADER, TOKEN_FIELD
from lora_core.errors import AdapterError, BackendUnavailable, InternalError, Overloaded, Unauthorized, from_wire

from .backend_watch import BackendWatch
from .coalescer import Coalescer, Group
from .infer_wire import InferConnection, bytes_tensor, int32_tensor

MODEL = "lora_classifier"
# Health and configuration calls wait no longer than this: status and readiness must answer promptly.
INSPECTION_TIMEOUT_S = 5.0
# What a failed connection to Triton raises (refused, reset, closed mid-response, timed out). Anything else
# is a bug of ours and must not be reported as Triton being unavailable.
TRANSPORT_ERRORS = (OSError, HTTPException, gevent.Timeout)
# What a proxy in front of Triton answers, with a body of its own, when it reaches no node.
PROXY_UNAVAILABLE = ("502", "503", "504")
# What Triton's queue policy answers (config.pbtxt's dynamic_batching): the queue is full, or a request
# waited past its timeout. Behind HAProxy, a node's refusal is first tried on another node.
QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")
# Control operations go at Triton's priority level 1: they pass every queued predict (level 2).
CONTROL_PRIORITY = 1


@dataclass(frozen=True)
class Prediction:
    """One text's result: labels in the label map's order and their probabilities."""

    labels: tuple[str, ...]
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class Predicted:
    """A predict's results, chunk by chunk, and the longest time one of its batches spent executing (the model's
    EXECUTE_US): the rest of the round trip is waiting (api_shim/admission.py)."""

    chunks: list[list[Prediction]]
    execute_s: float


@dataclass(frozen=True)
class GroupAnswer:
    """One coalesced predict's results, and how long the batch that served it executed."""

    predictions: list[Prediction]
    execute_s: float


class TritonGateway:
    def __init__(
        self,
        url: str,
        timeout_s: float = 120,
        concurrency: int = 4,
        model: str = MODEL,
        control_token: str = "",
        stall_s: float = 5.0,
        control_url: str = "",
        predict_retries: int = 0,
        coalesce_in_flight: int = 0,
        max_rows: int = 64,
    ) -> None:
        self.url = url
        self.control_url = control_url or url
        self.predict_retries = predict_retries
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.model = model
        self.control_token = control_token
        self.watch = BackendWatch(f"http://{url}/v2/health/live", stall_s)
        self._restricted = {RESTRICTED_API_HEADER: control_token}
        self._local = threading.local()
        # Concurrent one-chunk predicts joined into one Triton request (api_shim/coalescer.py); 0: each alone.
        self._coalescer = Coalescer(self._send_groups, coalesce_in_flight, max_rows) if coalesce_in_flight else None

    @property
    def _client(self) -> triton_http.InferenceServerClient:
        """This thread's client for inference and control."""
        return self._thread_client("client", self.timeout_s)

    @property
    def _inspector(self) -> triton_http.InferenceServerClient:
        """This thread's client for health and configuration, with a short timeout."""
        return self._thread_client("inspector", min(INSPECTION_TIMEOUT_S, self.timeout_s))

    @property
    def _control_client(self) -> triton_http.InferenceServerClient:
        """This thread's client for control operations (behind HAProxy: its control frontend)."""
        return self._thread_client("control", self.timeout_s, self.control_url)

    @property
    def _wire(self) -> InferConnection:
        """This thread's plain connection for one-request predicts."""
        wire = getattr(self._local, "wire", None)
        if wire is None:
            wire = self._local.wire = InferConnection(self.url, min(10.0, self.timeout_s), self.timeout_s)
        return wire

    def _thread_client(self, name: str, timeout_s: float, url: str = "") -> triton_http.InferenceServerClient:
        client = getattr(self._local, name, None)
        if client is None:
            client = triton_http.InferenceServerClient(
                url or self.url,
                concurrency=self.concurrency,
                connection_timeout=min(10.0, timeout_s),
                network_timeout=timeout_s,
            )
            setattr(self._local, name, client)
        return client

    def _reset(self) -> None:
        """Drop this thread's clients after a connection failure, so the next call reconnects."""
        wire, self._local.wire = getattr(self._local, "wire", None), None
        if wire is not None:
            wire.close()
        for name in ("client", "inspector", "control"):
            client = getattr(self._local, name, None)
            setattr(self._local, name, None)
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a broken client must not hide the original failure
                    pass

    # ------------------------------------------------------------------------------ data plane

    def predict(self, chunks: Sequence[tuple[Sequence[str], Sequence[str]]]) -> Predicted:
        """Send each (texts, model_ids) chunk as one request, all in flight together; results in order. A predict
        is idempotent: when Triton (or every node behind the balancer) was unreachable or not ready, it is sent
        again, up to `predict_retries` times."""
        first: BackendUnavailable | None = None
        for _ in range(self.predict_retries + 1):
            try:
                return self._predict_once(chunks)
            except BackendUnavailable as exc:
                first = first or exc  # the cause: later attempts may only meet the backend watch's fast refusal
        assert first is not None
        raise first

    def _predict_once(self, chunks: Sequence[tuple[Sequence[str], Sequence[str]]]) -> Predicted:
        groups = [Group(texts, model_ids) for texts, model_ids in chunks]
        if len(groups) == 1 and self._coalescer is not None:  # the common case: shared with its neighbours
            answers = [self._coalescer.run(groups[0])]
        elif len(groups) == 1:  # a plain call, without the client's greenlet pool
            answers = self._send_groups(groups)
        else:  # each chunk a request of its own, all in flight together
            pending = [self._call(lambda g=group: self._submit([g])) for group in groups]
            answers = [
                a
                for group, request in zip(groups, pending)
                for a in self._answers(list(self._call(request.get_result).as_numpy("RESULT")[:, 0]), [group])
            ]
        for answer in answers:
            if isinstance(answer, AdapterError):
                raise answer
        done = [a for a in answers if isinstance(a, GroupAnswer)]
        return Predicted([a.predictions for a in done], max(a.execute_s for a in done))

    def _send_groups(self, groups: list[Group]) -> list[GroupAnswer | AdapterError]:
        """One Triton request for every group, each answered or failed alone (the model's GROUP input)."""
        texts, model_ids, marks = _rows(groups)
        inputs = [bytes_tensor("TEXT", texts), bytes_tensor("MODEL_ID", model_ids), int32_tensor("GROUP", marks)]
        return self._answers(self._call(lambda: self._wire.infer(self.model, inputs, "RESULT")), groups)

    def _submit(self, groups: list[Group]):
        inputs, outputs = self._predict_request(groups)
        return self._client.async_infer(self.model, inputs, outputs=outputs)

    @staticmethod
    def _predict_request(groups: list[Group]):
        """`_send_groups`' request as tritonclient's inputs, asking for RESULT alone: each row one JSON document."""
        texts, model_ids, marks = _rows(groups)
        inputs = []
        for name, values in (("TEXT", texts), ("MODEL_ID", model_ids)):
            tensor = triton_http.InferInput(name, [len(values), 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[v] for v in values], dtype=object), binary_data=True)
            inputs.append(tensor)
        group_input = triton_http.InferInput("GROUP", [len(marks), 1], "INT32")
        group_input.set_data_from_numpy(np.array(marks, dtype=np.int32)[:, None], binary_data=True)
        inputs.append(group_input)
        return inputs, [triton_http.InferRequestedOutput("RESULT", binary_data=True)]

    @staticmethod
    def _answers(result: Sequence[bytes], groups: list[Group]) -> list[GroupAnswer | AdapterError]:
        """Each group's predictions, or its error, from the rows of RESULT."""
        rows = [json.loads(raw) for raw in result]
        answers: list[GroupAnswer | AdapterError] = []
        start = 0
        for group in groups:
            mine = rows[start : start + len(group.texts)]
            start += len(group.texts)
            execute_s = mine[0]["execute_us"] / 1e6
            error = mine[0].get("error")
            if error is not None:
                answers.append(from_wire(error) or InternalError(f"an error the shim cannot read: {error}"))
            else:
                predictions = [Prediction(tuple(row["labels"]), tuple(row["probabilities"])) for row in mine]
                answers.append(GroupAnswer(predictions, execute_s))
        return answers

    # --------------------------------------------------------------------------- control plane

    def control(self, document: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps({**document, TOKEN_FIELD: self.control_token}, ensure_ascii=False).encode("utf-8")
        tensor = triton_http.InferInput("CONTROL", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[payload]], dtype=object), binary_data=True)
        output = triton_http.InferRequestedOutput("CONTROL_RESULT", binary_data=True)
        try:
            result = self._call(
                lambda: self._control_client.infer(self.model, [tensor], outputs=[output], priority=CONTROL_PRIORITY)
            )
        except Unauthorized:  # the client did nothing wrong: the shim and Triton disagree on the secret
            raise InternalError(
                "Triton refused the shim's control token: CONTROL_TOKEN differs between the shim and Triton"
            ) from None
        return json.loads(result.as_numpy("CONTROL_RESULT")[0][0])

    # ------------------------------------------------------------------------------ inspection

    def model_state(self) -> str:
        """READY, LOADING, UNAVAILABLE (failed) or UNKNOWN, from Triton's repository index."""
        index = self._call(lambda: self._inspector.get_model_repository_index(headers=self._restricted))
        for entry in index:
            if entry.get("name") == self.model:
                return entry.get("state", "UNKNOWN") or "UNKNOWN"
        return "UNKNOWN"

    def model_ready(self) -> bool:
        return bool(self._call(lambda: self._inspector.is_model_ready(self.model)))

    def model_config(self) -> dict[str, Any]:
        return self._call(lambda: self._inspector.get_model_config(self.model, headers=self._restricted))

    def texts_at_once(self) -> int | None:
        """How many texts Triton runs at once: max_batch_size times the model's instances (a KIND_GPU group
        has its count on each of its GPUs); None while Triton cannot tell. Behind a balancer, one node's.

        Asked beside the watch, not through it: admission asks from a thread of its own while Triton may still be
        starting, and that must not mark Triton down (and fail clients' calls) once it answers. Asked with plain
        sockets (requests), not tritonclient's gevent client: the asking thread is a daemon, which the interpreter
        may stop anywhere at exit, and a gevent hub stopped there can crash the process."""
        try:
            answer = requests.get(
                f"http://{self.url}/v2/models/{self.model}/config",
                headers=self._restricted,
                timeout=min(INSPECTION_TIMEOUT_S, self.timeout_s),
            )
            config = answer.json() if answer.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None
        if not isinstance(config, dict):
            return None
        instances = sum(
            int(group.get("count", 1)) * max(1, len(group.get("gpus") or []))
            for group in config.get("instance_group", [])
        )
        return max(1, int(config.get("max_batch_size") or 1)) * max(1, instances)

    # -------------------------------------------------------------------------------- failures

    def _call(self, fn):
        with self.watch.call():
            try:
                result = fn()
            except InferenceServerException as exc:
                error = self._domain_error(exc)
                if not isinstance(error, BackendUnavailable):
                    self.watch.succeeded()  # Triton answered
                raise error from exc
            except TRANSPORT_ERRORS as exc:
                self._reset()
                self.watch.failed()
                raise BackendUnavailable(f"Triton is unreachable at {self.url}: {type(exc).__name__}") from exc
        self.watch.succeeded()
        return result

    def _domain_error(self, exc: InferenceServerException) -> AdapterError:
        message = exc.message() or str(exc)
        error = from_wire(message)
        if error is not None:
            return error
        if any(refusal in message for refusal in QUEUE_REFUSALS):
            return Overloaded(f"Triton's queue for {self.model} is full; retry shortly")
        if exc.status() in PROXY_UNAVAILABLE and "decoding the response" in message:
            # Not Triton's JSON: the balancer in front (HAProxy) has no node up, or none answered in time.
            answered = exc.status()
            return BackendUnavailable(f"no Triton node can serve {self.model} now (the balancer answered {answered})")
        if (
            exc.status() in (None, "None")
            or "unavailable" in message.lower()
            or "not ready" in message.lower()
            or "unknown model" in message.lower()
        ):
            self._reset()
            return BackendUnavailable(f"Triton cannot serve {self.model} now: {message[:300]}")
        return InternalError(f"Triton answered an unexpected error: {message[:300]}")


def _rows(groups: list[Group]) -> tuple[list[bytes], list[bytes], list[int]]:
    """The TEXT, MODEL_ID and GROUP rows of one Triton request for `groups`: each group's rows marked with its
    index, so that the model answers or fails each group alone."""
    texts = [text.encode("utf-8") for group in groups for text in group.texts]
    model_ids = [model_id.encode("utf-8") for group in groups for model_id in group.model_ids]
    marks = [g for g, group in enumerate(groups) for _ in group.texts]
    return texts, model_ids, marks
