"""The domain errors: one small hierarchy whose members carry the contract's error code.

Every layer (Triton model, REST shim) maps these; none invents its own codes or strings.
"""

from __future__ import annotations

import re


class AdapterError(Exception):
    """Base of every error the service reports to a client."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The contract's error body."""
        return {"error": self.code, "message": self.message}


class InvalidRequest(AdapterError):
    code, http_status = "invalid_request", 400


class Unauthorized(AdapterError):
    code, http_status = "unauthorized", 401


class ModelNotFound(AdapterError):
    code, http_status = "model_not_found", 404


class ModelNotLoaded(AdapterError):
    code, http_status = "model_not_loaded", 404


class PayloadTooLarge(AdapterError):
    code, http_status = "payload_too_large", 413


class InvalidModel(AdapterError):
    code, http_status = "invalid_model", 422


class CapacityExceeded(AdapterError):
    code, http_status = "capacity_exceeded", 507


class BackendUnavailable(AdapterError):
    code, http_status = "backend_unavailable", 503


class InternalError(AdapterError):
    code, http_status = "internal_error", 500


ERRORS_BY_CODE: dict[str, type[AdapterError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        ModelNotFound,
        ModelNotLoaded,
        PayloadTooLarge,
        InvalidModel,
        CapacityExceeded,
        BackendUnavailable,
        InternalError,
    )
}


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
