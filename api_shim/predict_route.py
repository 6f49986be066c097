"""`POST /api/v1/inference/predict`, answered as plain WSGI in front of Flask.

Predict is the one route on the hot path, and on a GPU node the shim's CPU per request is what the GPU waits on.
Through Flask it paid for a request context, URL matching, three hooks and a response object: a bare Flask
route costs about twice a bare gthread request (docs/benchmarks.md, floors). Here it is the route and nothing
else. Its behaviour is Flask's route's, one piece of code with it where there is any to share: the API key
check (api_shim/api_key.py), the body's reading and checks (api_shim/validation.py), the error answers
(api_shim/error_answers.py), the counts (api_shim/observability.py) and the JSON writer. Every other path and
method goes to Flask, where the predict rule answers with this module's code what only Flask's routing finds
(`//api/v1/inference/predict`, a lowercase method), and other methods on the path are a 405, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from . import observability
from .admission import Admission
from .api_key import require_api_key
from .error_answers import error_answer
from .gateway import TritonGateway
from .responses import json_bytes, predict_body
from .routes import MAX_MODEL_ID_CHARS
from .settings import ShimSettings
from .validation import int_field, json_body, string_field, string_list_field
from .worker import reservation, thread_wait_s

PREDICT_PATH = observability.PREDICT_ENDPOINT

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PredictRoute:
    """A WSGI app: POST PREDICT_PATH answered here, everything else by `fallback` (Flask's wsgi_app)."""

    def __init__(self, fallback: WSGIApp, settings: ShimSettings, gateway: TritonGateway, admission: Admission) -> None:
        self.fallback = fallback
        self.settings = settings
        self.gateway = gateway
        self.admission = admission

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PREDICT_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.fallback(environ, start_response)
        started = time.perf_counter()
        observability.IN_FLIGHT.inc()
        try:
            try:
                status, headers, body = 200, {}, json_bytes(self.answer(environ))
            except Exception as exc:
                error = error_answer(exc, "POST", PREDICT_PATH, self.settings.max_body_bytes)
                status, headers, body = error.status, error.headers, json_bytes(error.document)
            observability.count_answer(PREDICT_PATH, status, time.perf_counter() - started)
        finally:
            observability.IN_FLIGHT.dec()
        start_response(
            f"{status} {HTTP_STATUS_CODES[status].upper()}",  # as werkzeug writes it
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers.items()],
        )
        return [body]

    def answer(self, environ: dict[str, Any]) -> dict[str, Any]:
        """The contract's predict body for this request, or the exception that stands for its error."""
        settings = self.settings
        if settings.api_key:
            require_api_key(settings.api_key, environ.get("HTTP_X_API_KEY", ""), environ.get("HTTP_AUTHORIZATION", ""))
        body = json_body(environ, settings.max_body_bytes)
        model_id = string_field(body, "model_id", max_chars=MAX_MODEL_ID_CHARS)
        texts = string_list_field(body, "texts", settings.max_texts_per_request, settings.max_text_chars)
        top_n = int_field(body, "top_n", 3, 1, settings.max_top_n)
        batch_size = int_field(body, "batch_size", 16, 1, settings.max_batch_size)
        chunks = [
            (texts[start : start + batch_size], [model_id] * len(texts[start : start + batch_size]))
            for start in range(0, len(texts), batch_size)
        ]
        # Admitted after validation (cheap), before Triton: a refusal costs the client milliseconds, not a queue.
        with self.admission.admit(len(texts), thread_wait_s(), reservation()) as ticket:
            sent = time.perf_counter()
            predicted = self.gateway.predict(chunks)
            ticket.answered(time.perf_counter() - sent, predicted.execute_s)
        return predict_body(model_id, [p for chunk in predicted.chunks for p in chunk], top_n)
