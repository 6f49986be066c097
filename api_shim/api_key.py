"""The API key check, for Flask's before-request hook (api_shim/app.py) and the predict route that answers before
Flask (api_shim/predict_route.py)."""

from __future__ import annotations

import hmac

from lora_core.errors import Unauthorized


def require_api_key(expected: str, x_api_key: str, authorization: str) -> None:
    """Raise Unauthorized unless `X-API-Key` or `Authorization: Bearer` carries `expected` (compared in constant
    time)."""
    supplied = x_api_key
    if not supplied and authorization.lower().startswith("bearer "):
        supplied = authorization[7:].strip()
    if not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("a valid API key is required (X-API-Key header or Authorization: Bearer)")
