"""Request bodies: JSON objects whose fields are checked by type and bounds, or `invalid_request`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, overload

from flask import Request
from werkzeug.datastructures import MultiDict

from lora_core.errors import AdapterError, InvalidRequest, PayloadTooLarge

_MISSING = object()
MAX_QUERY_COUNT = 999_999_999  # a paging parameter's largest value (nine digits)
# The longest file name (one path component) Linux file systems allow, in bytes: a longer component names
# nothing, and asking the file system about it fails with ENAMETOOLONG instead of "not found".
NAME_MAX_BYTES = 255


NOT_JSON = "the body must be JSON (Content-Type: application/json)"


def json_object(request: Request) -> dict[str, Any]:
    """The JSON object a Flask route's request carries, at most MAX_CONTENT_LENGTH bytes (`json_body`)."""
    limit = request.max_content_length
    assert limit is not None  # api_shim.app sets MAX_CONTENT_LENGTH
    return json_body(request.environ, limit)


def json_body(environ: dict[str, Any], limit: int) -> dict[str, Any]:
    """The JSON object a WSGI request carries, for every route (Flask's and api_shim/predict_route.py): declared
    JSON, at most `limit` bytes (a Content-Length over it refused unread, a chunked body once it has given more),
    whole (a body cut short is the client's fault, a 400)."""
    if not is_json_mimetype(environ.get("CONTENT_TYPE", "")):
        raise InvalidRequest(NOT_JSON)
    return parse_json_object(_body_bytes(environ, limit))


def is_json_mimetype(content_type: str) -> bool:
    """What werkzeug's `Request.is_json` says of a Content-Type header: application/json or application/*+json."""
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def parse_json_object(data: bytes) -> dict[str, Any]:
    """`data` (UTF-8, -16 or -32, as json.loads detects) as a JSON object, or InvalidRequest."""
    try:
        body = json.loads(data)
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    except ValueError:  # not JSON, or not in any encoding JSON allows
        raise InvalidRequest("the body is not valid JSON") from None
    if body is None:  # the document null: werkzeug's get_json gave None for it too
        raise InvalidRequest("the body is not valid JSON")
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _body_bytes(environ: dict[str, Any], limit: int) -> bytes:
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidRequest("Content-Length is not a number") from None
        if length > limit:
            raise _too_large(limit)
        data = _read(environ, length) if length > 0 else b""
        if len(data) < length:
            raise _cut_short()
        return data
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and no end the server vouches for: no body, as werkzeug reads it
    data = _read(environ, limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    return data


# New objects each time: threads must not raise one exception object together.
def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {limit} bytes")


def _cut_short() -> InvalidRequest:
    # werkzeug answered a body cut short (the client gone mid-body) 400, a client's fault, never a 500.
    return InvalidRequest("the request body ended before it was complete")


def _read(environ: dict[str, Any], size: int) -> bytes:
    try:
        return environ["wsgi.input"].read(size)
    except (OSError, ValueError):  # the connection reset, or a chunked body cut off (gunicorn's NoMoreData)
        raise _cut_short() from None


def string_field(body: dict[str, Any], name: str, max_chars: int = 1024) -> str:
    """A required, non-blank string of at most `max_chars` characters."""
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        raise InvalidRequest(f"{name} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise InvalidRequest(f"{name} must not be empty")
    if len(value) > max_chars:
        raise InvalidRequest(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    return _valid_unicode(name, value)


def path_field(body: dict[str, Any], name: str, max_chars: int) -> str:
    """A required string naming a directory under the models root: each '/'-separated component must fit
    NAME_MAX_BYTES in UTF-8 (checked here so that no file system call sees it). The rest of the path
    rules ('..', absolute, control characters) belong to adapter_manager.layout."""
    value = string_field(body, name, max_chars=max_chars)
    longest = max(len(part.encode("utf-8")) for part in value.split("/"))
    if longest > NAME_MAX_BYTES:
        raise InvalidRequest(
            f"{name} has a path component of {longest} bytes; a directory name is at most {NAME_MAX_BYTES} bytes"
        )
    return value


@overload
def int_field(
    body: dict[str, Any], name: str, default: int, low: int | None = None, high: int | None = None
) -> int: ...
@overload
def int_field(
    body: dict[str, Any], name: str, default: None, low: int | None = None, high: int | None = None
) -> int | None: ...
def int_field(
    body: dict[str, Any], name: str, default: int | None, low: int | None = None, high: int | None = None
) -> int | None:
    """An integer (not a boolean) within [low, high] where they are given; `default` when absent or null."""
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer, got {_json_type(value)}")
    if low is not None and high is not None and not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, got {_json_type(value)}")
    return value


def string_list_field(
    body: dict[str, Any],
    name: str,
    max_items: int,
    max_item_chars: int,
    item_too_long: type[AdapterError] = PayloadTooLarge,
) -> list[str]:
    """A required, non-empty list of strings; too many items is payload_too_large, too long an item
    `item_too_long` (payload_too_large for texts; invalid_request for ids, whose bound is a value bound)."""
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
            raise item_too_long(f"{name}[{i}] is {len(item)} characters long; the limit is {max_item_chars}")
        _valid_unicode(f"{name}[{i}]", item)
    return value


def query_count(args: MultiDict[str, str], name: str) -> int | None:
    """An optional query-string parameter holding a count: plain ASCII digits, 0 to MAX_QUERY_COUNT."""
    value = _query_value(args, name)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise InvalidRequest(f"{name} must be an integer from 0 to {MAX_QUERY_COUNT}, got {value[:40]!r}")
    return int(value)


def query_choice(args: MultiDict[str, str], name: str, choices: Sequence[str]) -> str | None:
    """An optional query-string parameter that must be one of `choices`."""
    value = _query_value(args, name)
    if value is not None and value not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value


def _query_value(args: MultiDict[str, str], name: str) -> str | None:
    values = args.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


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
