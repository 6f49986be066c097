"""Triton's HTTP inference call with the binary tensor extension, over one plain `http.client` connection.

The predict path's client. tritonclient's HTTP client sends through geventhttpclient, a gevent hub per thread
and its own pools: measured here, a third of the shim's CPU for a lone predict (bench/levers.md). This sends
the same request (a JSON header, then each tensor's bytes) and reads the same answer, on a keep-alive
connection per calling thread. Its failures are tritonclient's, so that the gateway turns them into the same
domain errors: an answer other than 200 raises `InferenceServerException` with Triton's message and status;
a broken connection raises OSError or HTTPException.

The protocol: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import http.client
import json
import struct
from dataclasses import dataclass
from collections.abc import Sequence

from tritonclient.utils import InferenceServerException

HEADER_LENGTH = "Inference-Header-Content-Length"
# A connection kept alive may have been closed by the server since its last answer: such a failure, before any
# answer came, is retried once on a new connection (the call is idempotent). Anything else is reported.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_LENGTH = struct.Struct("<I")


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


class InferConnection:
    """One keep-alive connection to Triton's HTTP endpoint `host:port`; not for several threads at once."""

    def __init__(self, address: str, connect_timeout_s: float, timeout_s: float) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port = host or address, int(port) if port.isdigit() else 80
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def infer(self, model: str, inputs: Sequence[Tensor], output: str) -> list[bytes]:
        """The rows of `output` for one inference request of `inputs` to `model`."""
        body, header_length = request_body(inputs, output)
        headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(header_length)}
        path = f"/v2/models/{model}/infer"
        reused = self._connection is not None
        try:
            status, answer, answer_header = self._round_trip(path, body, headers)
        except STALE_CONNECTION:
            self.close()
            if not reused:
                raise
            status, answer, answer_header = self._round_trip(path, body, headers)
        if status != 200:
            raise error_of(status, answer)
        return output_rows(answer, None if answer_header is None else int(answer_header), output)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _round_trip(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        connection = self._connection
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout_s)
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(self._timeout_s)  # connected: answers may take as long as a predict may
            self._connection = connection
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            answer = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, answer, response.getheader(HEADER_LENGTH)
