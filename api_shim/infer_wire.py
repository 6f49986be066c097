"""Triton's HTTP inference call with the binary tensor extension, over one plain keep-alive socket.

The predict path's client. tritonclient's HTTP client sends through geventhttpclient, a gevent hub per thread
and its own pools: a fifth of the shim's py-spy samples for a lone predict, measured here (bench/levers.md).
This sends the same request (a JSON header, then each tensor's bytes) and reads the same answer, on a keep-alive
connection per calling thread. Its failures are tritonclient's, so that the gateway turns them into the same
domain errors: an answer other than 200 raises `InferenceServerException` with Triton's message and status;
a broken connection raises OSError or HTTPException.

The protocol: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
from dataclasses import dataclass
from collections.abc import Sequence
from typing import BinaryIO

from tritonclient.utils import InferenceServerException

HEADER_LENGTH = "Inference-Header-Content-Length"
# A connection kept alive may have been closed by the server since its last answer: such a failure, before any
# answer came, is retried once on a new connection (the call is idempotent). Anything else is reported.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_LENGTH = struct.Struct("<I")
MAX_LINE = 65536  # bytes in a status or header line of an answer
MAX_HEADERS = 100


@dataclass(frozen=True)
class Tensor:
    """An input as it goes on the wire: its bytes in Triton's binary layout."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


def bytes_tensor(name: str, rows: Sequence[bytes]) -> Tensor:
    """A [rows, 1] BYTES input: each element its 4-byte little-endian length, then its bytes."""
    data = b"".join(_LENGTH.pack(len(row)) + row for row in rows)
    return Tensor(name, "BYTES", (len(rows), 1), data)


def int32_tensor(name: str, rows: Sequence[int]) -> Tensor:
    """A [rows, 1] INT32 input, little-endian."""
    return Tensor(name, "INT32", (len(rows), 1), struct.pack(f"<{len(rows)}i", *rows))


def split_bytes(data: bytes) -> list[bytes]:
    """The elements of a BYTES tensor's binary data."""
    elements, offset = [], 0
    while offset < len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise ValueError("a BYTES element runs past the end of its tensor")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def request_body(inputs: Sequence[Tensor], output: str) -> tuple[bytes, int]:
    """The body of an inference request for `inputs`, asking `output` in binary; and its JSON header's length."""
    header = {
        "inputs": [
            {
                "name": t.name,
                "shape": list(t.shape),
                "datatype": t.datatype,
                "parameters": {"binary_data_size": len(t.data)},
            }
            for t in inputs
        ],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([encoded, *(t.data for t in inputs)]), len(encoded)


def output_rows(body: bytes, header_length: int | None, output: str) -> list[bytes]:
    """The elements of the BYTES output `output` of a 200 answer (binary, or JSON when the server chose so)."""
    header = json.loads(body if header_length is None else body[:header_length])
    offset = header_length or 0
    for entry in header.get("outputs", []):
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if entry.get("name") == output:
            if size is None:  # sent as JSON: a flat list of strings
                return [str(v).encode() for v in entry.get("data", [])]
            return split_bytes(body[offset : offset + size])
        offset += size or 0
    raise InferenceServerException(msg=f"Triton's answer has no output {output}", status="200")


def error_of(status: int, body: bytes) -> InferenceServerException:
    """What tritonclient raises for a non-200 answer: Triton's message, or a note that the body is not Triton's."""
    try:
        message = json.loads(body)["error"] if body else "client received an empty response from the server."
    except (ValueError, KeyError, TypeError) as exc:
        # The gateway recognises this wording: a proxy (HAProxy) answered with a page of its own.
        message = f"an exception occurred in the client while decoding the response: {exc}"
    return InferenceServerException(msg=str(message), status=str(status))


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[bytes, bytes]  # names in lower case
    body: bytes
    close: bool  # the server closes the connection after it


class _Connection:
    """A connected socket and its buffered reader (one for the connection's life, not one per answer)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class InferConnection:
    """One keep-alive connection to Triton's HTTP endpoint `host:port`; not for several threads at once."""

    def __init__(self, address: str, connect_timeout_s: float, timeout_s: float) -> None:
        host, _, port = address.rpartition(":")
        if not port.isdigit():  # no port given ("triton", "[::1]")
            host, port = address, "80"
        self._host, self._port = host.strip("[]"), int(port)  # an IPv6 address without its brackets, to connect
        self._host_header = f"{host}:{port}"  # with them, as HTTP writes it
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None

    def infer(self, model: str, inputs: Sequence[Tensor], output: str) -> list[bytes]:
        """The rows of `output` for one inference request of `inputs` to `model`."""
        body, header_length = request_body(inputs, output)
        head = (
            f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {self._host_header}\r\n"
            f"Content-Type: application/octet-stream\r\n{HEADER_LENGTH}: {header_length}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("ascii")
        request = head + body  # one send: no wait on the peer's delayed ACK between head and body
        reused = self._connection is not None
        try:
            answer = self._round_trip(request)
        except STALE_CONNECTION:
            if not reused:
                raise
            answer = self._round_trip(request)
        if answer.status != 200:
            raise error_of(answer.status, answer.body)
        inference_header = answer.headers.get(HEADER_LENGTH.lower().encode("ascii"))
        return output_rows(answer.body, None if inference_header is None else int(inference_header), output)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _round_trip(self, request: bytes) -> _Answer:
        connection = self._connection or self._connect()
        try:
            connection.sock.sendall(request)
            answer = read_answer(connection.reader)
        except BaseException:
            self.close()
            raise
        if answer.close:
            self.close()
        return answer

    def _connect(self) -> _Connection:
        sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._timeout_s)  # connected: answers may take as long as a predict may
        self._connection = _Connection(sock)
        return self._connection


def read_answer(reader: BinaryIO) -> _Answer:
    """One HTTP/1.1 answer from `reader`: its status line, headers and body (by Content-Length, chunked, or up to
    the end of the connection). http.client parses headers with the email package, a tenth of the shim's py-spy
    samples for a lone predict; Triton's and HAProxy's answers need none of what it handles."""
    line = _line(reader)
    if not line:
        raise http.client.RemoteDisconnected("the server closed the connection without an answer")
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise http.client.BadStatusLine(repr(line[:80]))
    headers: dict[bytes, bytes] = {}
    for _ in range(MAX_HEADERS):
        line = _line(reader)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")
    connection = headers.get(b"connection", b"").lower()
    close = connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive")
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = _chunked(reader)
    elif b"content-length" in headers:
        length = _number(headers[b"content-length"], 10)
        body = reader.read(length)
        if len(body) < length:
            raise http.client.IncompleteRead(body, length - len(body))
    else:
        body, close = reader.read(), True
    return _Answer(int(code), headers, body, close)


def _number(text: bytes, base: int) -> int:
    try:
        value = int(text, base)
    except ValueError:
        raise http.client.HTTPException(f"not a length: {text[:40]!r}") from None
    if value < 0:
        raise http.client.HTTPException(f"a negative length: {value}")
    return value


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("an answer's line")
    return line


def _chunked(reader: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        if not size_line:
            raise http.client.IncompleteRead(b"".join(parts))
        size = _number(size_line, 16)
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) < size:
            raise http.client.IncompleteRead(chunk, size - len(chunk))
        parts.append(chunk)
        _line(reader)  # the CRLF after the chunk
