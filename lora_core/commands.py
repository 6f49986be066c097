"""The control plane's input, checked once at the edge and passed inward typed.

A CONTROL document (JSON from Triton's CONTROL tensor, built by the shim or any client) becomes one of
`LoadCommand`, `UnloadCommand`, `ListCommand`, `QueryCommand`, `StatusCommand`. Everything inside (the
service, the engine, `layout.locate`) takes these values and does not check them again.

One function spells a model id (`normalize_model_id`): the same spelling that loads a model predicts with it,
unloads it and queries it. One rule bounds max_length (`check_max_length`), against the base's positions;
the shim checks only that it is a JSON integer and leaves the range to this rule, whose answer it relays.
"""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest

MAX_MODEL_DIR_CHARS = 512
MIN_MAX_LENGTH = 2  # [CLS] and [SEP]: anything shorter holds no text at all
DEFAULT_MAX_LENGTH = 512
CONTROL_OPS = ("load", "unload", "list", "query", "status")
LISTING_STATUSES = ("loaded", "unloaded")
MAX_QUERY_IDS = 1024  # the shim allows fewer (MAX_TEXTS_PER_REQUEST); this bounds any other client


@dataclass(frozen=True)
class LoadCommand:
    model_id: str  # normalized
    max_length: int  # within the base's limit
    reload: bool = False


@dataclass(frozen=True)
class UnloadCommand:
    model_id: str  # normalized where it is valid at all (model_id_or_as_given)


@dataclass(frozen=True)
class ListCommand:
    """The models listing, optionally filtered by status and cut to one page (`limit` None: all)."""

    status: str | None = None  # one of LISTING_STATUSES
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class QueryCommand:
    model_ids: tuple[str, ...]  # canonical (normalize_model_id), without repeats; invalid spellings dropped


@dataclass(frozen=True)
class StatusCommand:
    pass


Command = LoadCommand | UnloadCommand | ListCommand | QueryCommand | StatusCommand


def parse_command(document: Any, max_length_limit: int) -> Command:
    """The command a decoded CONTROL document asks for; InvalidRequest naming the first thing that is wrong."""
    if not isinstance(document, dict):
        raise InvalidRequest("CONTROL must be a JSON object with an 'op' field")
    op = document.get("op")
    if op not in CONTROL_OPS:
        raise InvalidRequest(f"unknown control op {op!r}; expected one of {', '.join(CONTROL_OPS)}")
    if op == "load":
        model_id = normalize_model_id(document.get("model_dir"), "model_dir")
        max_length = check_max_length(document.get("max_length"), max_length_limit)
        return LoadCommand(model_id, max_length, _flag(document, "reload"))
    if op == "unload":
        given = document.get("model_id")
        if not isinstance(given, str) or not given:
            raise InvalidRequest("model_id must be a non-empty string")
        # As predict: an id that spells nothing valid names no loaded model (model_not_loaded), not a bad request.
        return UnloadCommand(model_id_or_as_given(given))
    if op == "list":
        return _list_command(document)
    if op == "query":
        return _query_command(document)
    return StatusCommand()


def _list_command(document: dict[str, Any]) -> ListCommand:
    status = document.get("status")
    if status is not None and status not in LISTING_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(LISTING_STATUSES)}, got {status!r}")
    limit = document.get("limit")
    if limit is not None:
        limit = _count(limit, "limit")
    return ListCommand(status, limit, _count(document.get("offset", 0), "offset"))


def _count(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _query_command(document: dict[str, Any]) -> QueryCommand:
    given = document.get("model_ids")
    if not isinstance(given, list) or not given:
        raise InvalidRequest("model_ids must be a non-empty list of strings")
    if len(given) > MAX_QUERY_IDS:
        raise InvalidRequest(f"model_ids has {len(given)} items; the limit is {MAX_QUERY_IDS}")
    if not all(isinstance(model_id, str) for model_id in given):
        raise InvalidRequest("model_ids must be a non-empty list of strings")
    model_ids: dict[str, None] = {}  # ordered, without repeats
    for model_id in given:
        try:
            model_ids[normalize_model_id(model_id)] = None
        except InvalidRequest:
            pass  # spells nothing that can exist: left out, as every unknown id is
    return QueryCommand(tuple(model_ids))


@functools.lru_cache(maxsize=4096)  # predict spells every row's id: most are the same few
def normalize_model_id(value: object, field: str = "model_id") -> str:
    """Validate a client's spelling of a training output (relative to the models root) and return the canonical
    one, which is the model id: '/'-separated, no '..', no control characters; './' and repeated or trailing
    slashes fold away, so 'team/job/', './team/job' and 'team//job' are all 'team/job'."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRequest(f"{field} must not be empty")
    if len(value) > MAX_MODEL_DIR_CHARS:
        raise InvalidRequest(f"{field} is {len(value)} characters long; the limit is {MAX_MODEL_DIR_CHARS}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or "\\" in value:
        raise InvalidRequest(f"{field} contains control characters or backslashes")
    if not is_unicode(value):
        raise InvalidRequest(f"{field} is not valid Unicode (it holds an unpaired surrogate)")
    if value.startswith(("/", "~")):
        raise InvalidRequest(f"{field} must be relative to the models root, got {value!r}")
    if ".." in value.split("/"):
        raise InvalidRequest(f"{field} must not contain '..': {value!r}")
    normalized = posixpath.normpath(value)
    if normalized in (".", "") or normalized.startswith(".."):
        raise InvalidRequest(f"{field} {value!r} does not name a directory inside the models root")
    return normalized


def model_id_or_as_given(value: str) -> str:
    """The canonical spelling of `value`, or `value` itself when it spells nothing valid (it then names no
    loaded model, and the caller answers model_not_loaded as for any unknown id)."""
    try:
        return normalize_model_id(value)
    except InvalidRequest:
        return value


def default_max_length(limit: int) -> int:
    """The truncation length of a load that names none: DEFAULT_MAX_LENGTH, or the base's limit if lower."""
    return min(DEFAULT_MAX_LENGTH, limit)


def check_max_length(value: object, limit: int) -> int:
    """max_length as given, or the default: an integer from MIN_MAX_LENGTH to `limit`, the base's positions."""
    if value is None:
        return default_max_length(limit)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"max_length must be an integer, got {type(value).__name__}")
    if not MIN_MAX_LENGTH <= value <= limit:
        raise InvalidRequest(f"max_length must be between {MIN_MAX_LENGTH} and {limit}, got {value}")
    return value


def _flag(document: dict[str, Any], name: str) -> bool:
    value = document.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, got {value!r}")
    return value


def is_unicode(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (no unpaired surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
