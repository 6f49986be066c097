"""The shim's plain inference call (api_shim/infer_wire.py): tensors laid out as tritonclient lays them out,
answers read binary or JSON, errors as tritonclient reports them, and a keep-alive connection the server closed
retried once on a new one. Against real Triton it runs in every tests/api_shim test."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor, serialize_byte_tensor

from api_shim.infer_wire import (
    HEADER_LENGTH,
    InferConnection,
    bytes_tensor,
    error_of,
    int32_tensor,
    output_rows,
    read_answer,
    request_body,
    split_bytes,
)

ROWS = [b"", b"a", "类别 好坏 新闻".encode(), b"x" * 70_000, b"\x00\xff"]


@pytest.mark.parametrize("rows", [ROWS, [b"one"], ROWS[::-1] * 3])
def test_bytes_tensors_are_laid_out_as_tritonclient_lays_them_out(rows):
    ours = bytes_tensor("TEXT", rows)
    theirs = serialize_byte_tensor(np.array(rows, dtype=object)).item()
    assert ours.data == theirs
    assert ours.shape == (len(rows), 1)
    assert split_bytes(ours.data) == rows
    assert list(deserialize_bytes_tensor(ours.data)) == rows


def test_a_bytes_element_that_runs_past_its_tensor_is_refused():
    with pytest.raises(ValueError):
        split_bytes(bytes_tensor("TEXT", [b"abcdef"]).data[:-1])


def test_int32_tensors_are_little_endian():
    tensor = int32_tensor("GROUP", [0, 1, -2, 70000])
    assert np.frombuffer(tensor.data, dtype="<i4").tolist() == [0, 1, -2, 70000]


def test_the_request_names_each_input_with_its_size_and_asks_its_output_in_binary():
    inputs = [bytes_tensor("TEXT", [b"hi", b"there"]), int32_tensor("GROUP", [0, 1])]
    body, header_length = request_body(inputs, "RESULT")
    header = json.loads(body[:header_length])
    assert [i["name"] for i in header["inputs"]] == ["TEXT", "GROUP"]
    assert [i["parameters"]["binary_data_size"] for i in header["inputs"]] == [len(t.data) for t in inputs]
    assert header["outputs"] == [{"name": "RESULT", "parameters": {"binary_data": True}}]
    assert body[header_length:] == inputs[0].data + inputs[1].data


def binary_answer(outputs: list[tuple[str, list[bytes]]]) -> tuple[bytes, int]:
    tensors = [bytes_tensor(name, rows) for name, rows in outputs]
    header = {
        "outputs": [
            {"name": t.name, "datatype": "BYTES", "shape": [len(r), 1], "parameters": {"binary_data_size": len(t.data)}}
            for t, (_, r) in zip(tensors, outputs)
        ]
    }
    encoded = json.dumps(header).encode()
    return encoded + b"".join(t.data for t in tensors), len(encoded)


def test_the_asked_output_is_found_after_the_others():
    body, header_length = binary_answer([("ERROR", [b"", b"e"]), ("RESULT", [b'{"a":1}', b"{}"])])
    assert output_rows(body, header_length, "RESULT") == [b'{"a":1}', b"{}"]
    assert output_rows(body, header_length, "ERROR") == [b"", b"e"]
    with pytest.raises(InferenceServerException):
        output_rows(body, header_length, "MISSING")


def test_an_output_sent_as_json_is_read_too():
    body = json.dumps({"outputs": [{"name": "RESULT", "datatype": "BYTES", "shape": [1, 1], "data": ["{}"]}]})
    assert output_rows(body.encode(), None, "RESULT") == [b"{}"]


def test_errors_read_as_tritonclient_reports_them():
    triton = error_of(400, b'{"error":"model X is not loaded"}')
    assert (triton.message(), triton.status()) == ("model X is not loaded", "400")
    proxy = error_of(503, b"<html><body>No server is available</body></html>")
    assert proxy.status() == "503" and "decoding the response" in proxy.message()
    assert "empty response" in error_of(500, b"").message()


class _Triton(BaseHTTPRequestHandler):
    """A real HTTP server answering inference requests as Triton does: RESULT holds each TEXT row reversed."""

    protocol_version = "HTTP/1.1"
    close_after_answer = False
    answered: list[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        header_length = int(self.headers[HEADER_LENGTH])
        header = json.loads(body[:header_length])
        size = header["inputs"][0]["parameters"]["binary_data_size"]
        texts = split_bytes(body[header_length : header_length + size])
        answer, answer_header = binary_answer([("RESULT", [t[::-1] for t in texts])])
        type(self).answered.append(len(texts))  # before the answer goes: the client counts once it has it
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header(HEADER_LENGTH, str(answer_header))
        self.send_header("Content-Length", str(len(answer)))
        if self.close_after_answer:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Triton,), {"answered": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()


def call(connection: InferConnection, *texts: bytes) -> list[bytes]:
    return connection.infer("lora_classifier", [bytes_tensor("TEXT", list(texts))], "RESULT")


def test_calls_share_one_kept_alive_connection(server):
    httpd, handler = server
    connection = InferConnection(f"127.0.0.1:{httpd.server_address[1]}", 5, 5)
    assert connection._connection is None  # connected on the first call, not before
    assert call(connection, b"abc", b"") == [b"cba", b""]
    kept = connection._connection
    assert kept is not None
    assert call(connection, "类".encode()) == ["类".encode()[::-1]]
    assert connection._connection is kept
    connection.close()
    assert connection._connection is None and kept.sock.fileno() == -1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_an_address_may_be_a_name_or_an_ipv6_literal(host):
    family = socket.AF_INET6 if host == "[::1]" else socket.AF_INET
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")

    class Server(ThreadingHTTPServer):
        address_family = family

    handler = type("Handler", (_Triton,), {"answered": []})
    try:
        httpd = Server((host.strip("[]"), 0), handler)
    except OSError:
        pytest.skip(f"{host} cannot be bound here")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        connection = InferConnection(f"{host}:{httpd.server_address[1]}", 5, 5)
        assert call(connection, b"ab") == [b"ba"]
        connection.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_that_closes_after_each_answer_gets_a_new_connection_each_time(server):
    httpd, handler = server
    handler.close_after_answer = True
    connection = InferConnection(f"127.0.0.1:{httpd.server_address[1]}", 5, 5)
    for i in range(3):
        assert call(connection, b"%d" % i) == [b"%d" % i]
        assert connection._connection is None
    assert len(handler.answered) == 3


def test_a_kept_alive_connection_the_server_dropped_is_retried_once_on_a_new_one(server):
    httpd, handler = server
    connection = InferConnection(f"127.0.0.1:{httpd.server_address[1]}", 5, 5)
    assert call(connection, b"ab") == [b"ba"]
    assert connection._connection is not None and connection._connection.sock is not None
    connection._connection.sock.shutdown(socket.SHUT_RDWR)  # what a server closing an idle connection leaves
    assert call(connection, b"cd") == [b"dc"]
    assert len(handler.answered) == 2


def test_a_new_connection_that_fails_is_reported_not_retried():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        connection = InferConnection(f"127.0.0.1:{port}", 2, 2)
        with pytest.raises(ConnectionRefusedError):
            call(connection, b"x")
        assert connection._connection is None


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (in the kernel's backlog) and never answers
        connection = InferConnection(f"127.0.0.1:{silent.getsockname()[1]}", 1, 0.3)
        with pytest.raises(OSError):  # socket.timeout
            call(connection, b"x")
        assert connection._connection is None


def test_an_answer_with_a_length_is_read_to_its_length_and_keeps_the_connection():
    reader = io.BytesIO(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Other:  a:b \r\n\r\nhello" + b"HTTP/1.1 ...")
    answer = read_answer(reader)
    assert (answer.status, answer.body, answer.close) == (200, b"hello", False)
    assert answer.headers[b"x-other"] == b"a:b"
    assert reader.read() == b"HTTP/1.1 ..."  # the next answer is left alone


def test_a_chunked_answer_is_joined():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nT: x\r\n\r\n"
    answer = read_answer(io.BytesIO(raw))
    assert (answer.body, answer.close) == (b"hello world", False)


@pytest.mark.parametrize(
    "raw, closes",
    [
        (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", True),
        (b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno", True),
        (b"HTTP/1.0 503 Service Unavailable\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nno", False),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\nno", True),  # no length: the body ends with the connection
    ],
)
def test_answers_that_end_the_connection_say_so(raw, closes):
    answer = read_answer(io.BytesIO(raw))
    assert (answer.status, answer.body, answer.close) == (503, b"no", closes)


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"", http.client.RemoteDisconnected),
        (b"SSH-2.0-OpenSSH\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", http.client.LineTooLong),
    ],
)
def test_broken_answers_are_transport_failures(raw, error):
    """Each an HTTPException (or the stale connection's RemoteDisconnected): the gateway reports Triton
    unreachable, never a bug of its own."""
    with pytest.raises(error):
        read_answer(io.BytesIO(raw))
