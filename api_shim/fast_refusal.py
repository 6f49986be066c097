"""A predict looked at, and refused if need be, in gunicorn's accept loop, without a thread (api_shim/worker.py).

The request is looked at with MSG_PEEK and taken off the socket only when the whole of it is there and it is
a plain `POST /api/v1/inference/predict` with a Content-Length; anything else (another route, a chunked or
`Expect: 100-continue` body, a body not all there within BODY_WAIT_S, more than PEEK_BYTES) is left
untouched for the thread pool to serve as usual. The 429 is written with one non-blocking send: a few
hundred bytes into a connection whose last answer was read, so it fits the socket's buffer; a connection
where it does not is closed.

Only the body's count of texts is read (the route validates it); the API key is not checked first: a 429
means nothing was done, and a client that sends it again once the service has room gets the answer its
request deserves.
"""

from __future__ import annotations

import enum
import errno
import json
import socket
import time
from dataclasses import dataclass

from lora_core.errors import Overloaded

PREDICT_PATH = b"/api/v1/inference/predict"
PEEK_BYTES = 65536  # a predict larger than this is refused, if need be, by its thread
BODY_WAIT_S = 0.005  # the longest the accept loop waits for the rest of a body already announced


class Outcome(enum.Enum):
    NO_DATA = "nothing to read yet"
    OTHER = "not a whole predict: for the thread pool"
    KEEP_ALIVE = "refused; the connection stays open"
    CLOSE = "refused; the connection is to be closed"


@dataclass(frozen=True)
class PeekedPredict:
    """A whole predict waiting in a socket, not yet read from it."""

    size: int  # bytes, head and body
    keep_alive: bool
    texts: int  # how many texts its body lists (1 when it lists none: its thread will answer 400)


def peek_predict(sock: socket.socket) -> PeekedPredict | Outcome:
    """The whole predict waiting in the socket, or why not. Many clients write a request's head and its body
    separately; a body still on its way is waited for, briefly (BODY_WAIT_S), in short sleeps: the socket
    stays readable meanwhile, so the poller cannot wait for it."""
    deadline = time.monotonic() + BODY_WAIT_S
    while True:
        try:
            data = sock.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return Outcome.NO_DATA
        except OSError:
            return Outcome.OTHER  # the thread pool meets the same error and closes the connection
        head = _whole_predict(data)
        if head is None:
            return Outcome.OTHER
        size, keep_alive, body_at = head
        if len(data) >= size:
            return PeekedPredict(size, keep_alive, _texts_in(data[body_at:size]))
        if size > PEEK_BYTES or time.monotonic() >= deadline:
            return Outcome.OTHER
        time.sleep(BODY_WAIT_S / 20)


def refuse(sock: socket.socket, predict: PeekedPredict, refusal: Overloaded, arrived: float) -> Outcome:
    """Take the predict off the socket and answer it 429; KEEP_ALIVE or CLOSE."""
    answer = _answer(refusal, predict.keep_alive)
    try:
        sock.recv(predict.size, socket.MSG_DONTWAIT)  # already there: peeked
        sent = sock.send(answer, socket.MSG_DONTWAIT)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
            raise
        sent = 0
    _count(time.monotonic() - arrived)
    return Outcome.KEEP_ALIVE if predict.keep_alive and sent == len(answer) else Outcome.CLOSE


def _texts_in(body: bytes) -> int:
    try:
        texts = json.loads(body).get("texts")
    except (ValueError, AttributeError):
        return 1
    return max(1, len(texts)) if isinstance(texts, list) else 1


def _whole_predict(data: bytes) -> tuple[int, bool, int] | None:
    """(the request's size, whether the connection stays open, where its body starts) when `data` starts with a
    predict's whole head; its body may not all be there yet."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[1].split(b"?", 1)[0] != PREDICT_PATH:
        return None
    version = parts[2]
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    lengths, connection = [], b""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return None
        name, value = name.strip().lower(), value.strip()
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            lengths.append(value)
        elif name == b"connection":
            connection = value.lower()
    if len(lengths) != 1 or not lengths[0].isdigit():
        return None
    keep_alive = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
    return end + 4 + int(lengths[0]), keep_alive, end + 4


def _answer(refusal: Overloaded, keep_alive: bool) -> bytes:
    body = json.dumps(refusal.to_dict(), ensure_ascii=False).encode("utf-8")
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {refusal.retry_after_s}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _count(seconds: float) -> None:
    from . import observability  # in the worker, once its metrics directory is set (gunicorn.conf.py)

    observability.count_refusal(seconds)
