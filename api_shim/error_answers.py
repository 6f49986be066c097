"""Every failure as the contract's body {"error", "message"}, its status and headers; nothing else reaches the
client. One function for Flask's error handler (api_shim/app.py) and the predict route that answers before Flask
(api_shim/predict_route.py), so that both answer an error alike."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from lora_core.errors import AdapterError, InternalError, InvalidRequest, Overloaded, PayloadTooLarge, Unauthorized

from . import observability
from .worker import arrived_at

log = logging.getLogger("api_shim")


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    document: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(exc: Exception, method: str, path: str, max_body_bytes: int) -> ErrorAnswer:
    """What the client gets for `exc`, raised answering `method path`. An unexpected exception is logged with its
    traceback under a reference the client is given; a 5xx the service knows is logged in one line; a refusal
    for overload counts its latency (`lora_api_refusal_seconds`)."""
    error = _as_domain_error(exc, method, path, max_body_bytes)
    if isinstance(error, InternalError) and not isinstance(exc, AdapterError):
        reference = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s %s", reference, method, path, exc_info=exc)
        error = InternalError(f"internal error (reference {reference}); the details are in the service log")
    elif error.http_status >= 500:
        log.warning("%s on %s %s: %s", error.code, method, path, error.message)
    headers = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(error.retry_after_s)
        arrived = arrived_at()
        if arrived is not None:
            observability.REFUSAL_SECONDS.observe(time.monotonic() - arrived)
    return ErrorAnswer(error.http_status, error.to_dict(), headers)


def _as_domain_error(exc: Exception, method: str, path: str, max_body_bytes: int) -> AdapterError:
    if isinstance(exc, AdapterError):
        return exc
    if isinstance(exc, RequestEntityTooLarge):
        return PayloadTooLarge(f"the request body is larger than {max_body_bytes} bytes")
    if isinstance(exc, HTTPException):
        error = InvalidRequest(f"{method} {path}: {exc.description or exc.name}")
        error.http_status = exc.code or 400  # 404 unknown path, 405 wrong method: their own statuses
        return error
    return InternalError(str(type(exc).__name__))
