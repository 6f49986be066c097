"""Faults injected into a real tritonserver and a real gunicorn while clients are talking to them.

This module starts its own tritonserver (2 CPU instances, its own STATE_DIR and models root) and its own
shim, so killing them never disturbs the session `triton` / `shim` other tests share.

- tritonserver SIGKILLed during traffic: every answer is 200 (finished before) or 503 backend_unavailable,
  promptly; restarted with the same STATE_DIR, every adapter is back with the same probabilities, unasked;
- one gunicorn worker SIGKILLed during traffic: only requests sent before the kill can fail, the master
  respawns the worker and every later request is answered 200;
- a manifest overwritten with garbage (while running, and while Triton is down): kept aside, the service
  answers and its listing, status and predictions agree with each other (what it listed is lost: a load
  brings a model back);
- the shim started while tritonserver is down: not ready, 503, then served once Triton is up, with the
  same gunicorn processes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import requests

from testkit.api_shim_env import shim_env
from testkit.factories import OutputSpec, make_training_output
from testkit.shim_harness import ShimServer
from testkit.traffic import Traffic, summary
from testkit.triton_harness import TritonServer, server_settings
from testkit.triton_tests_helpers import TOLERANCE, expected_rows

MODELS = {
    "f-alpha": OutputSpec(rank=4, num_labels=3, seed=31),
    "team/f-beta": OutputSpec(
        stem="beta", rank=8, target_modules=("query", "key", "value"), num_labels=4, pooling="mean", seed=32
    ),
    "f-gamma": OutputSpec(stem="gamma", rank=2, target_modules=("key",), num_labels=2, seed=33),
}
TEXTS = ["baba dede kiki", "类别 好坏", "lolo mumu nana fafa"]
LOAD, UNLOAD, PREDICT, LISTING = (
    "/inference/models/load",
    "/inference/models/unload",
    "/inference/predict",
    "/inference/models",
)
PROMPT_S = 5.0  # every request during a fault is answered within this many seconds


@pytest.fixture(scope="module")
def fault_root(tmp_path_factory, base_dir) -> Path:
    root = tmp_path_factory.mktemp("fault-models")
    for model_id, spec in MODELS.items():
        make_training_output(root, model_id, base_dir, spec)
    return root


@pytest.fixture(scope="module")
def fault_triton(tmp_path_factory, base_dir, fault_root):
    workdir = tmp_path_factory.mktemp("fault-triton")
    server = TritonServer(
        workdir, server_settings(base_dir, fault_root, workdir / "state", MAX_ADAPTERS="8"), instances=2
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_shim(tmp_path_factory, fault_triton):
    server = ShimServer(tmp_path_factory.mktemp("fault-shim"), shim_env(fault_triton))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def expected(reference, fault_root):
    return {m: expected_rows(reference, fault_root, m, TEXTS) for m in MODELS}


@pytest.fixture
def served(fault_shim, fault_triton):
    """Triton up (a failed test may have left it down) and nothing loaded, before and after each test."""
    ensure_running(fault_triton)
    unload_everything(fault_shim)
    yield fault_shim
    ensure_running(fault_triton)
    unload_everything(fault_shim)


def ensure_running(triton: TritonServer) -> None:
    if triton.server.process is None or triton.server.process.poll() is not None:
        triton.start()


def unload_everything(shim: ShimServer) -> None:
    for model_id in loaded(shim):
        requests.post(f"{shim.base}{UNLOAD}", json={"model_id": model_id}, timeout=30).raise_for_status()


def loaded(shim: ShimServer) -> list[str]:
    response = requests.get(f"{shim.base}{LISTING}", timeout=30)
    assert response.status_code == 200, response.text
    return sorted(m["model_id"] for m in response.json()["models"] if m["status"] == "loaded")


def load(shim: ShimServer, model_id: str) -> None:
    response = requests.post(f"{shim.base}{LOAD}", json={"model_dir": model_id}, timeout=60)
    assert response.status_code == 200 and response.json()["status"] == "loaded", response.text


def predict(shim: ShimServer, model_id: str, texts=TEXTS, timeout: float = 30) -> requests.Response:
    return requests.post(f"{shim.base}{PREDICT}", json={"model_id": model_id, "texts": list(texts)}, timeout=timeout)


def assert_probabilities(body: dict, want: list[dict[str, float]]) -> None:
    for got, row in zip(body["label_probabilities"], want, strict=True):
        assert list(got) == list(row)
        assert max(abs(got[k] - row[k]) for k in row) <= TOLERANCE


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body


# ---------------------------------------------------------------------------------- the faults


def test_tritonserver_killed_during_traffic_then_restarted_restores_every_adapter(served, fault_triton, expected):
    for model_id in MODELS:
        load(served, model_id)
    before = {}
    for model_id in MODELS:
        response = predict(served, model_id)
        assert response.status_code == 200, response.text
        assert_probabilities(response.json(), expected[model_id])
        before[model_id] = response.json()["label_probabilities"]
    server = psutil.Process(fault_triton.server.process.pid)
    stubs = server.children(recursive=True)

    with Traffic(served.base, list(MODELS), clients=4) as traffic:
        traffic.wait_for(12)
        os.kill(server.pid, signal.SIGKILL)
        fault_triton.server.process.wait(timeout=10)
        dead_at = time.monotonic()
        time.sleep(2.5)
    outcomes = traffic.outcomes
    after = [o for o in outcomes if o.started >= dead_at]
    print("tritonserver SIGKILL:", summary(outcomes), f"max latency {max(o.latency for o in outcomes):.3f}s")

    assert all((o.status, o.error) in {(200, ""), (503, "backend_unavailable")} for o in outcomes), summary(outcomes)
    assert max(o.latency for o in outcomes) < PROMPT_S
    assert len(after) >= 4 and all(o.status == 503 for o in after), summary(after)
    for o in outcomes:
        if o.status == 200:
            assert o.finished <= dead_at + 0.5
            assert_probabilities(o.body, expected[o.model_id])
    assert_error(requests.get(f"{served.base}/health/ready", timeout=10), 503, "backend_unavailable")
    status = requests.get(f"{served.base}/inference/status", timeout=10)
    assert status.status_code == 200 and status.json()["service_status"] == "error"

    fault_triton.start()  # same environment: same STATE_DIR; no client loads anything
    assert loaded(served) == sorted(MODELS)
    for model_id in MODELS:
        response = predict(served, model_id)
        assert response.status_code == 200, response.text
        assert_probabilities(response.json(), expected[model_id])
        for got, was in zip(response.json()["label_probabilities"], before[model_id]):
            assert max(abs(got[k] - was[k]) for k in was) <= TOLERANCE
    status = requests.get(f"{served.base}/inference/status", timeout=10).json()
    assert status["service_status"] == "running" and status["loaded_models_count"] == len(MODELS)
    # the killed server's backend stubs notice and exit: nothing is left holding memory
    gone, alive = psutil.wait_procs(stubs, timeout=15)
    assert not alive, f"backend stubs of the killed server still running: {[p.pid for p in alive]}"


def test_a_gunicorn_worker_killed_during_traffic_loses_only_its_own_requests(served, expected):
    load(served, "f-alpha")
    load(served, "f-gamma")
    master = psutil.Process(served.server.process.pid)
    workers = master.children()
    assert len(workers) == 2
    victim = workers[0]
    clients = 6

    with Traffic(served.base, ["f-alpha", "f-gamma"], clients=clients) as traffic:
        traffic.wait_for(20)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        dead_at = time.monotonic()
        traffic.wait_for(len(traffic.outcomes) + 30)
    outcomes = traffic.outcomes
    failed = [o for o in outcomes if o.status != 200]
    print("gunicorn worker SIGKILL:", summary(outcomes), f"max latency {max(o.latency for o in outcomes):.3f}s")

    # what failed was in flight on the dead worker when it died: sent before, at most one per client
    assert len(failed) <= clients, summary(outcomes)
    assert all(o.started < dead_at and o.status is None for o in failed), summary(failed)
    assert max(o.latency for o in outcomes) < PROMPT_S
    for o in outcomes:
        if o.status == 200:
            assert_probabilities(o.body, expected[o.model_id])

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = {p.pid for p in master.children()}
        if len(pids) == 2 and victim.pid not in pids:
            break
        time.sleep(0.2)
    assert len(pids) == 2 and victim.pid not in pids, f"no worker respawned: {pids}"
    with Traffic(served.base, ["f-alpha", "f-gamma"], clients=4) as traffic:
        traffic.wait_for(40)
    assert all(o.status == 200 for o in traffic.outcomes), summary(traffic.outcomes)
    # both the respawned and the surviving worker answered
    assert master.is_running() and {p.pid for p in master.children()} == pids


def manifest_path(triton: TritonServer) -> Path:
    return Path(triton.env["STATE_DIR"]) / "manifest.json"


def damaged_copies(triton: TritonServer) -> list[Path]:
    return sorted(manifest_path(triton).parent.glob("manifest.json.damaged-*"))


def assert_consistent(shim: ShimServer, expected) -> list[str]:
    """Listing, status and predictions agree: loaded models predict right, the others are model_not_loaded."""
    now_loaded = loaded(shim)
    for _ in range(3):  # any instance may answer: they must all agree
        assert loaded(shim) == now_loaded
    status = requests.get(f"{shim.base}/inference/status", timeout=10)
    assert status.status_code == 200, status.text
    assert status.json()["service_status"] == "running"
    assert status.json()["loaded_models_count"] == len(now_loaded)
    for model_id in MODELS:
        for _ in range(2):
            response = predict(shim, model_id)
            if model_id in now_loaded:
                assert response.status_code == 200, response.text
                assert_probabilities(response.json(), expected[model_id])
            else:
                assert_error(response, 404, "model_not_loaded")
    return now_loaded


GARBAGE = b'\x00\xff{"generation": 7, "models": {"f-alpha": [garbage' + bytes(range(256))
NESTED = b'{"generation": 7, "models": ' + b"[" * 100_000  # json raises RecursionError, not ValueError


@pytest.mark.parametrize("garbage", [GARBAGE, NESTED], ids=["bytes", "nested"])
def test_a_manifest_overwritten_with_garbage_while_running_is_kept_aside(served, fault_triton, expected, garbage):
    for copy in damaged_copies(fault_triton):
        copy.unlink()
    load(served, "f-alpha")
    load(served, "f-gamma")
    manifest_path(fault_triton).write_bytes(garbage)

    # the next call repairs it: what could be read (nothing) is the state, the damaged bytes are kept
    response = requests.get(f"{served.base}{LISTING}", timeout=10)
    assert response.status_code == 200, response.text
    copies = damaged_copies(fault_triton)
    assert len(copies) == 1 and copies[0].read_bytes() == garbage
    assert assert_consistent(served, expected) == []
    assert_error(
        requests.post(f"{served.base}{UNLOAD}", json={"model_id": "f-alpha"}, timeout=10), 404, "model_not_loaded"
    )
    # the operator's fix: load again
    load(served, "f-alpha")
    assert assert_consistent(served, expected) == ["f-alpha"]
    assert damaged_copies(fault_triton) == copies  # a good manifest is never set aside


def test_a_shim_started_while_triton_is_down_serves_once_triton_is_up_despite_a_damaged_manifest(
    served, fault_triton, expected, tmp_path
):
    """Two faults on one restart (each tritonserver start costs ~20 s here): the shim comes up first, and
    the manifest was overwritten with garbage while Triton was down."""
    for copy in damaged_copies(fault_triton):
        copy.unlink()
    load(served, "f-gamma")
    fault_triton.stop()
    manifest_path(fault_triton).write_bytes(GARBAGE)
    shim = ShimServer(tmp_path, shim_env(fault_triton))
    shim.start()
    try:
        processes = {p.pid for p in psutil.Process(shim.server.process.pid).children()} | {shim.server.process.pid}
        assert requests.get(f"{shim.base}/health/live", timeout=10).status_code == 200
        for _ in range(4):  # both workers, several threads
            started = time.monotonic()
            assert_error(requests.get(f"{shim.base}/health/ready", timeout=10), 503, "backend_unavailable")
            assert_error(predict(shim, "f-gamma", timeout=10), 503, "backend_unavailable")
            assert_error(requests.get(f"{shim.base}{LISTING}", timeout=10), 503, "backend_unavailable")
            assert time.monotonic() - started < PROMPT_S
        status = requests.get(f"{shim.base}/inference/status", timeout=10)
        assert status.status_code == 200 and status.json()["service_status"] == "error"

        fault_triton.start()
        for _ in range(4):
            assert requests.get(f"{shim.base}/health/ready", timeout=10).status_code == 200
        # the damaged manifest: both instances read it at start-up, one copy is kept, nothing is loaded
        copies = damaged_copies(fault_triton)
        assert len(copies) == 1 and copies[0].read_bytes() == GARBAGE
        assert assert_consistent(shim, expected) == []
        load(shim, "f-gamma")
        assert assert_consistent(shim, expected) == ["f-gamma"]
        now = {p.pid for p in psutil.Process(shim.server.process.pid).children()} | {shim.server.process.pid}
        assert now == processes  # served without restarting the shim or any of its workers
    finally:
        shim.stop()
