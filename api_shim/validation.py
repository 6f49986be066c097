"""Request bodies: JSON objects whose fields are checked by type and bounds, or `invalid_request`."""

from __future__ import annotations

from typing import Any

from flask import Request

from adapter_manager.errors import InvalidRequest, PayloadTooLarge

_MISSING = object()


def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    if not request.is_json:
        raise InvalidRequest("the body must be JSON (Content-Type: application/json)")
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    if body is None:
        raise InvalidRequest("the body is not valid JSON")
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def string_field(body: dict[str, Any], name: str, required: bool = True, max_chars: int = 1024) -> str | None:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise InvalidRequest(f"{name} must not be empty")
    if len(value) > max_chars:
        raise InvalidRequest(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    return _valid_unicode(name, value)


def int_field(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer, got {_json_type(value)}")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, got {_json_type(value)}")
    return value


def string_list_field(body: dict[str, Any], name: str, max_items: int, max_item_chars: int) -> list[str]:
    """A required, non-empty list of strings; too many items or too long an item is payload_too_large."""
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        raise InvalidRequest(f"{name} is required")
    if not isinstance(value, list):
        raise InvalidRequest(f"{name} must be a list of strings, got {_json_type(value)}")
    if not value:
        raise InvalidRequest(f"{name} must not be empty")
    if len(value) > max_items:
        raise PayloadTooLarge(f"{name} has {len(value)} items; the limit is {max_items}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidRequest(f"{name}[{i}] must be a string, got {_json_type(item)}")
        if len(item) > max_item_chars:
            raise PayloadTooLarge(f"{name}[{i}] is {len(item)} characters long; the limit is {max_item_chars}")
        _valid_unicode(f"{name}[{i}]", item)
    return value


def _valid_unicode(name: str, value: str) -> str:
    """JSON escapes can smuggle lone surrogates ("\\ud800") that no UTF-8 encoder accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{name} is not valid Unicode (it holds an unpaired surrogate)") from None
    return value


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
