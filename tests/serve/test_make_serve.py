"""`make serve` itself: supervision, shutdown and what it exposes, each run in its own run directory, ports and
state, so a test never touches a developer's running server.

- tritonserver SIGKILLed under traffic: only 200 or 503 (the 503s within 1 s), no hung request, status
  answers throughout, then the same models serve again within 60 s, within 1e-4 of before, unasked; the
  killed server's backend stubs and shared memory are gone;
- tritonserver hung (SIGSTOP): treated as dead; no request waits for TRITON_TIMEOUT_S;
- the gunicorn master SIGKILLed: restarted, the models still loaded;
- SIGTERM: the shim stops taking requests, the ones in flight finish, nothing is left, exit 0 (Ctrl-C: the
  same signal handler; the fixture's teardown uses it);
- a Triton that cannot start (a broken BASE_MODEL_DIR): make serve gives up with the cause, non-zero;
- Triton's ports listen on loopback and the control secret lives in STATE_DIR with mode 0600.
"""

from __future__ import annotations

import os
import http.client
import json
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from collections.abc import Callable

import psutil
import pytest
import requests

from testkit.tolerance import assert_same_predictions
from testkit.traffic import Traffic, summary
from testkit.make_harness import TEXTS, Serve, safely

MODELS = ["alpha", "team/beta"]
BACK_WITHIN_S = 60


def _gone(processes: list[psutil.Process]) -> bool:
    return not [p for p in processes if safely(lambda q: q.is_running() and q.status() != psutil.STATUS_ZOMBIE, p)]


@pytest.fixture(scope="module")
def serve(tmp_path_factory, base_dir, triton_models_root):
    run = Serve(
        tmp_path_factory.mktemp("serve"),
        BASE_MODEL_DIR=str(base_dir),
        MODELS_ROOT=str(triton_models_root),
        TRITON_HANG_TIMEOUT_S="3",
        TRITON_STALL_S="1",
    )
    with run.serving(MODELS):
        yield run


@pytest.fixture(scope="module")
def answers(serve) -> dict[str, dict]:
    """What each model answers before any fault."""
    found = {}
    for model_id in MODELS:
        response = serve.predict(model_id)
        assert response.status_code == 200, response.text
        found[model_id] = response.json()
    return found


def assert_back(serve: Serve, answers: dict[str, dict], since: float) -> None:
    """Within BACK_WITHIN_S of `since`, status is running and every model answers as before."""
    serve.wait_for(
        lambda: serve.status()["service_status"] == "running",
        since + BACK_WITHIN_S - time.monotonic(),
        "status running again",
    )
    for model_id, before in answers.items():
        response = serve.predict(model_id)
        assert response.status_code == 200, response.text
        assert_same_predictions(response.json(), before)
    assert time.monotonic() - since < BACK_WITHIN_S


def test_the_ports_are_loopback_only_and_the_secret_is_private(serve):
    listening = {c.laddr for c in serve.tritonserver().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert len(listening) == 3 and {addr.ip for addr in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    token = serve.workdir / "state" / "control-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 32


def test_a_killed_tritonserver_comes_back_with_its_models_under_traffic(serve, answers):
    server = serve.tritonserver()
    left_behind = [p for p in server.children() if p.name().startswith("triton_python_b")]  # the backend stubs
    assert len(left_behind) == 2, left_behind
    shared_memory = {Path(m.path) for p in left_behind for m in p.memory_maps() if m.path.startswith("/dev/shm/")}
    assert shared_memory
    with Traffic(serve.base, MODELS, clients=4, timeout=10, texts=TEXTS, pause_after_error_s=0.02) as traffic:
        traffic.wait_for(8)
        killed_at = time.monotonic()
        server.kill()
        serve.wait_for(lambda: serve.status()["service_status"] in ("error", "starting"), 10, "status error")
        assert serve.status()["service_status"] in ("error", "starting")  # status answers while Triton is down
        serve.wait_for(
            lambda: any(o.status == 200 for o in traffic.since(killed_at + 1)), BACK_WITHIN_S, "a 200 after the restart"
        )
    outcomes = traffic.outcomes
    print("tritonserver SIGKILL under make serve:", summary(outcomes))
    assert all((o.status, o.error) in {(200, ""), (503, "backend_unavailable")} for o in outcomes), summary(outcomes)
    assert all(o.latency < 1.0 for o in outcomes if o.status == 503), max(
        o.latency for o in outcomes if o.status == 503
    )
    assert any(o.status == 503 for o in outcomes)
    for o in outcomes:
        if o.status == 200:
            assert_same_predictions(o.body, answers[o.model_id])
    assert_back(serve, answers, killed_at)
    assert _gone(left_behind), "the killed server's backend stubs are still running"
    assert not [path for path in shared_memory if path.exists()], "the killed server's shared memory is left behind"
    assert (
        "tritonserver exited (killed by SIGKILL)" in serve.output()
        and "restarting tritonserver in 1 s" in serve.output()
    )


def test_a_hung_tritonserver_is_restarted_and_holds_no_request_for_long(serve, answers):
    server = serve.tritonserver()
    with Traffic(serve.base, MODELS, clients=4, timeout=60, texts=TEXTS, pause_after_error_s=0.02) as traffic:
        traffic.wait_for(len(traffic.outcomes) + 8)
        hung_at = time.monotonic()
        server.suspend()
        serve.wait_for(lambda: not server.is_running(), 30, "the hung tritonserver killed")
        serve.wait_for(
            lambda: any(o.status == 200 for o in traffic.since(hung_at + 1)), BACK_WITHIN_S, "a 200 after the restart"
        )
    outcomes = traffic.since(hung_at)
    print(
        "tritonserver SIGSTOP under make serve:",
        summary(outcomes),
        f"max latency {max(o.latency for o in outcomes):.1f} s",
    )
    assert all((o.status, o.error) in {(200, ""), (503, "backend_unavailable")} for o in outcomes), summary(outcomes)
    assert max(o.latency for o in outcomes) < 15  # the hang timeout (3 s) and a restart, never TRITON_TIMEOUT_S (120 s)
    # Once a call has been stuck for TRITON_STALL_S, new calls check Triton first and fail fast.
    assert any(o.status == 503 and o.latency < 1.5 for o in outcomes), summary(outcomes)
    assert "stopped answering its health endpoint" in serve.output()
    assert_back(serve, answers, hung_at)


def test_a_killed_gunicorn_master_is_restarted(serve, answers):
    master = serve.gunicorn_master()
    workers = master.children()
    killed_at = time.monotonic()
    os.killpg(master.pid, signal.SIGKILL)
    serve.wait_for(lambda: _gone([master, *workers]), 10, "the old gunicorn gone")
    serve.wait_for(lambda: _answers(f"{serve.base}/health/live"), 30, "the shim answering again")
    assert serve.gunicorn_master().pid != master.pid
    assert "gunicorn exited (killed by SIGKILL)" in serve.output()
    assert_back(serve, answers, killed_at)


def test_sigterm_stops_taking_requests_then_drains_the_ones_in_flight_and_leaves_nothing(serve, answers):
    processes = serve.descendants()
    script = next(p for p in psutil.Process(serve.process.pid).children() if "serve.py" in " ".join(p.cmdline()))
    server, worker = serve.tritonserver(), serve.gunicorn_master().children()[0]
    server.suspend()  # from now on every request is held in the shim, waiting on Triton
    requests_in_flight = [InFlight(serve.api_port, model_id) for model_id in MODELS * 2]
    taken = {request.client_port for request in requests_in_flight}
    serve.wait_for(lambda: taken <= _accepted_from(worker, serve.api_port), 2, "4 requests taken by the shim")
    script.send_signal(signal.SIGTERM)
    serve.wait_for(lambda: not _accepts(serve.api_port), 10, "the shim refusing new connections")
    server.resume()
    assert serve.process.wait(timeout=90) == 0, serve.output()[-3000:]
    for request in requests_in_flight:
        status, body = request.result()
        assert status == 200, body
        assert_same_predictions(body, answers[request.model_id])
    assert _wait(lambda: _gone(processes), 10), [p for p in processes if p.is_running()]
    assert "serve: stopping (signal 15)" in serve.output()


class InFlight:
    """One predict sent on its own connection, whose client port is known; its answer is read in a thread."""

    def __init__(self, port: int, model_id: str) -> None:
        self.model_id = model_id
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.connection.connect()
        self.client_port = self.connection.sock.getsockname()[1]
        body = json.dumps({"model_id": model_id, "texts": TEXTS})
        self.connection.request("POST", "/api/v1/inference/predict", body, {"Content-Type": "application/json"})
        self._answer: list = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        response = self.connection.getresponse()
        self._answer.append((response.status, json.loads(response.read())))

    def result(self) -> tuple[int, dict]:
        self._reader.join(timeout=60)
        assert self._answer, "no answer"
        return self._answer[0]


def _accepted_from(worker: psutil.Process, port: int) -> set[int]:
    """Client ports of the connections the shim's worker has accepted on `port`."""
    return {c.raddr.port for c in worker.net_connections(kind="inet") if c.laddr.port == port and c.raddr}


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_triton_that_cannot_start_ends_make_serve_with_its_cause(tmp_path, triton_models_root):
    run = Serve(
        tmp_path,
        BASE_MODEL_DIR=str(tmp_path / "no-such-base"),
        MODELS_ROOT=str(triton_models_root),
        TRITON_INSTANCES="1",
        TRITON_GIVE_UP_AFTER="3",  # 5 by default; the backoff's doubling is in test_supervision_rules.py
    ).start()
    try:
        code = run.process.wait(timeout=240)
    finally:
        run.stop()
    output = run.output()
    assert code != 0, output[-3000:]
    assert "tritonserver failed 3 times in a row" in output and "cannot start" in output, output[-3000:]
    assert "no-such-base" in output.split("cannot start")[0].rsplit("tritonserver exited", 1)[1], output[-3000:]
    assert output.count("restarting tritonserver in") == 2
    for delay in (1, 2):
        assert f"restarting tritonserver in {delay} s" in output


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
