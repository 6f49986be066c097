"""A kept-alive connection lingers on its gunicorn thread (api_shim/worker.py, KEEPALIVE_LINGER_MS), against a real
gunicorn running the shim (no Triton: the liveness endpoint never calls it).

The linger here is a minute, so that a thread that lingered when it must not would show as a wait of a minute,
never as a matter of timing: every request below is answered at once by a correct worker.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time

import pytest

from testkit.process_harness import free_port
from testkit.shim_harness import ShimServer

LINGER_MS = 60_000
PROMPT_S = 20.0  # far below the linger; a correct worker answers in milliseconds
LIVE = "/api/v1/health/live"


def start_shim(tmp_path_factory, threads: int, linger_ms: int = LINGER_MS) -> ShimServer:
    env = {
        "TRITON_URL": f"127.0.0.1:{free_port()}",  # nothing listens: only the liveness endpoint is asked
        "ADMISSION_MAX_WAIT_S": "0",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": str(threads),
        "KEEPALIVE_LINGER_MS": str(linger_ms),
        "DRAIN_TIMEOUT_S": "120",  # a stop held by a linger would show, not be cut short
    }
    server = ShimServer(tmp_path_factory.mktemp(f"linger-{threads}"), env)
    server.start()
    return server


def ask_live(connection: http.client.HTTPConnection) -> float:
    """One liveness request on the kept-alive `connection`; how long it took."""
    started = time.monotonic()
    connection.request("GET", LIVE)
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"status": "live"}
    assert response.getheader("Connection", "").lower() != "close"
    return time.monotonic() - started


@pytest.fixture(scope="module")
def two_threads(tmp_path_factory):
    server = start_shim(tmp_path_factory, threads=2)
    yield server
    server.stop()


def test_a_kept_alive_connection_is_served_request_after_request(two_threads) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", two_threads.port, timeout=PROMPT_S)
    try:
        for _ in range(20):
            assert ask_live(connection) < PROMPT_S
    finally:
        connection.close()


def test_pipelined_requests_are_answered_in_order(two_threads) -> None:
    """The second request is read ahead with the first: it is in the parser's buffer, which no poller sees."""
    request = f"GET {LIVE} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", two_threads.port), timeout=PROMPT_S) as sock:
        sock.sendall(request * 3)
        received = b""
        while received.count(b'"status":"live"') < 3:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {received.count(b'HTTP/1.1 200')} answers"
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 3


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_lingering_thread_never_takes_the_last_free_one(tmp_path_factory, threads) -> None:
    """Each client keeps its connection open after its answer; a new client is still answered at once, however
    many threads linger."""
    server = start_shim(tmp_path_factory, threads)
    connections = []
    try:
        for _ in range(threads + 3):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2 * PROMPT_S)
            connections.append(connection)
            assert ask_live(connection) < PROMPT_S
        for connection in connections:  # and each kept-alive connection is still served
            assert ask_live(connection) < PROMPT_S
    finally:
        for connection in connections:
            connection.close()
        server.stop()


def test_a_stop_is_not_held_by_a_lingering_connection(tmp_path_factory) -> None:
    server = start_shim(tmp_path_factory, threads=4)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PROMPT_S)
    try:
        ask_live(connection)  # its thread now lingers for a minute, waiting for the next request
        process = server.server.process
        assert process is not None
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=2 * PROMPT_S)
        assert time.monotonic() - started < PROMPT_S
    finally:
        connection.close()
        server.stop()


def test_the_linger_must_not_be_negative() -> None:
    from api_shim.settings import ShimSettings

    with pytest.raises(ValueError, match="KEEPALIVE_LINGER_MS"):
        ShimSettings.load({"KEEPALIVE_LINGER_MS": "-1"})
    assert ShimSettings.load({}).keepalive_linger_ms == 30
