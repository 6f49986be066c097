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


def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    if not request.is_json:
        raise InvalidRequest(NOT_JSON)
    if _chunked_body_over_limit(request):
        raise PayloadTooLarge(f"the request body is larger than {request.max_content_length} bytes")
    return parse_json_object(request.get_data(cache=True))  # over Content-Length's limit: werkzeug's 413


NOT_JSON = "the body must be JSON (Content-Type: application/json)"


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


def _chunked_body_over_limit(request: Request) -> bool:
    """A body without Content-Length (chunked) is cut at MAX_CONTENT_LENGTH by werkzeug without an error,
    which would surface as "not valid JSON"; a body that fills the limit and has more to give is too large."""
    limit = request.max_content_length
    if request.content_length is not None or limit is None:
        return False  # with a Content-Length, werkzeug refuses an oversized body itself (413)
    if len(request.get_data(cache=True)) < limit:
        return False
    return request.environ["wsgi.input"].read(1) != b""


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
