"""The domain errors: one small hierarchy whose members carry the contract's error code, the HTTP status
the shim answers with, and the Triton error code the model raises.

Every layer (Triton model, REST shim) maps these; none invents its own codes or strings. A new error class
registers itself (`ERRORS_BY_CODE`), so its code survives the trip through Triton.
"""

from __future__ import annotations

import re


# Every error class by its contract code; AdapterError.__init_subclass__ fills it.
ERRORS_BY_CODE: dict[str, type[AdapterError]] = {}


class AdapterError(Exception):
    """Base of every error the service reports to a client."""

    code: str = "internal_error"
    http_status: int = 500
    # The pb_utils.TritonError attribute the Triton model raises it as (INVALID_ARG, NOT_FOUND, UNAVAILABLE...).
    triton_code: str = "INTERNAL"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code in ERRORS_BY_CODE:
            raise TypeError(f"{cls.__name__}: the error code {cls.code!r} is taken by {ERRORS_BY_CODE[cls.code]}")
        ERRORS_BY_CODE[cls.code] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str | float]:
        """The contract's error body."""
        return {"error": self.code, "message": self.message}


class InvalidRequest(AdapterError):
    code, http_status, triton_code = "invalid_request", 400, "INVALID_ARG"


class Unauthorized(AdapterError):
    code, http_status, triton_code = "unauthorized", 401, "INVALID_ARG"


class ModelNotFound(AdapterError):
    code, http_status, triton_code = "model_not_found", 404, "NOT_FOUND"


class ModelNotLoaded(AdapterError):
    code, http_status, triton_code = "model_not_loaded", 404, "NOT_FOUND"


class PayloadTooLarge(AdapterError):
    code, http_status, triton_code = "payload_too_large", 413, "INVALID_ARG"


class InvalidModel(AdapterError):
    code, http_status, triton_code = "invalid_model", 422, "INVALID_ARG"


class CapacityExceeded(AdapterError):
    code, http_status, triton_code = "capacity_exceeded", 507, "UNAVAILABLE"


class Overloaded(AdapterError):
    """More work is queued than the service accepts; the client should retry after `retry_after_s` seconds."""

    code, http_status, triton_code = "overloaded", 429, "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)
        self.wait_s = wait_s  # the wait that the shim's admission expected, when it refused

    def to_dict(self) -> dict[str, str | float]:
        body: dict[str, str | float] = {**super().to_dict()}
        if self.wait_s is not None:
            body["wait_s"] = round(self.wait_s, 3)
        return body


class BackendUnavailable(AdapterError):
    code, http_status, triton_code = "backend_unavailable", 503, "UNAVAILABLE"


class InternalError(AdapterError):
    code, http_status, triton_code = "internal_error", 500, "INTERNAL"


def error_from_code(code: str, message: str) -> AdapterError:
    """Rebuild a domain error from its wire form (unknown codes become internal errors)."""
    return ERRORS_BY_CODE.get(code, InternalError)(message)


_WIRE_PATTERN = re.compile(r"\[(" + "|".join(ERRORS_BY_CODE) + r")\] ?(.*)", re.DOTALL)


def to_wire(error: AdapterError) -> str:
    """How an error travels inside another system's message (e.g. a TritonError): `[code] message`."""
    return f"[{error.code}] {error.message}"


def from_wire(text: str) -> AdapterError | None:
    """The domain error inside a message produced by `to_wire` (wherever it starts), if there is one."""
    match = _WIRE_PATTERN.search(text)
    return None if match is None else error_from_code(match.group(1), match.group(2).strip())
