"""Overload, against a real tritonserver and real gunicorn shims: excess predicts are refused at once with
429 overloaded and Retry-After, and control operations are never refused.

This module starts its own tritonserver (1 CPU instance, TRITON_MAX_QUEUE_SIZE=1) and pauses it with
SIGSTOP, so that what is in flight is certain rather than a matter of timing:

- the shim's admission (ADMISSION_MAX_WAIT_S): with tritonserver paused and a predict known to be in flight
  (its bytes wait in tritonserver's socket), the next predict is refused at once; control sent meanwhile is
  not refused;
- Triton's own queue bound: with the model's backend stub paused, one 64-text predict executes, one waits in
  the queue, and every further one comes back from Triton refused, which the shim answers 429, never 500;
  a control operation, at Triton's priority level 1, still gets in.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import requests

from testkit.api_shim_env import shim_env
from testkit.conditions import wait_for
from testkit.factories import OutputSpec, make_training_output
from testkit.shim_harness import ShimServer
from testkit.triton_harness import TritonServer, server_settings

from .conftest import assert_conforms

MODEL = "o-alpha"
PREDICT, LISTING, LOAD = "/inference/predict", "/inference/models", "/inference/models/load"
TEXTS = [f"baba dede kiki {i}" for i in range(64)]
REFUSAL_S = 5.0  # a refusal comes back within this, while what was admitted hangs


@pytest.fixture(scope="module")
def overload_triton(tmp_path_factory, base_dir):
    root = tmp_path_factory.mktemp("overload-models")
    make_training_output(root, MODEL, base_dir, OutputSpec(rank=4, num_labels=3, seed=41))
    workdir = tmp_path_factory.mktemp("overload-triton")
    settings = server_settings(base_dir, root, workdir / "state", TRITON_MAX_QUEUE_SIZE="1")
    server = TritonServer(workdir, settings, instances=1)
    server.start()
    yield server
    server.stop()


def start_shim(tmp_path_factory, triton: TritonServer, **settings: str) -> ShimServer:
    # One worker: admission is per worker process, and a test must know which one answers.
    env = shim_env(triton, {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8", "MAX_TEXTS_PER_REQUEST": "64"})
    server = ShimServer(tmp_path_factory.mktemp("overload-shim"), {**env, **settings})
    server.start()
    return server


@pytest.fixture(scope="module")
def admitting_shim(tmp_path_factory, overload_triton):
    server = start_shim(tmp_path_factory, overload_triton, ADMISSION_MAX_WAIT_S="0.001")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_shim(tmp_path_factory, overload_triton):
    """Admission off: every predict reaches Triton's queue."""
    server = start_shim(tmp_path_factory, overload_triton, ADMISSION_MAX_WAIT_S="0")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def loaded(open_shim):
    response = requests.post(f"{open_shim.base}{LOAD}", json={"model_dir": MODEL}, timeout=60)
    assert response.status_code == 200, response.text


@contextmanager
def paused(*processes: psutil.Process) -> Iterator[None]:
    for process in processes:
        os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGCONT)


def tritonserver(triton: TritonServer) -> psutil.Process:
    assert triton.server.process is not None
    return psutil.Process(triton.server.process.pid)


def backend_stubs(triton: TritonServer) -> list[psutil.Process]:
    stubs = [p for p in tritonserver(triton).children(recursive=True) if "python_backend_stub" in p.name()]
    assert stubs, "no backend stub under tritonserver"
    return stubs


def post(shim: ShimServer, path: str, body: dict) -> requests.Response:
    return requests.post(f"{shim.base}{path}", json=body, timeout=120)


def predict_body(texts: list[str]) -> dict:
    return {"model_id": MODEL, "texts": texts, "batch_size": 64}


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "overloaded"
    assert int(response.headers["Retry-After"]) >= 1
    assert_conforms("POST", PREDICT, response)


def bytes_waiting_at(port: int) -> int:
    """Bytes received and not yet read on the sockets of this local TCP port (/proc/net/tcp's rx_queue): a
    paused tritonserver's, once a request has reached it."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            waiting += int(fields[4].split(":")[1], 16)
    return waiting


def test_the_shim_refuses_a_predict_that_would_wait_and_never_a_control_operation(
    loaded, admitting_shim, overload_triton
):
    triton, port = tritonserver(overload_triton), overload_triton.http_port
    with ThreadPoolExecutor(4) as pool:
        # A worker without an estimate admits everything. Held for more than a window of busy time (1 s), one
        # predict teaches the worker its speed once it is served.
        with paused(triton):
            taught = pool.submit(post, admitting_shim, PREDICT, predict_body(TEXTS))
            wait_for(lambda: bytes_waiting_at(port), REFUSAL_S, "the predict reaching the paused tritonserver")
            time.sleep(1.2)  # a duration to hold it for, not a guess at a condition
        assert taught.result().status_code == 200

        # Now any predict behind one in flight would wait longer than ADMISSION_MAX_WAIT_S (1 ms).
        with paused(triton):
            held = pool.submit(post, admitting_shim, PREDICT, predict_body(TEXTS[:1]))
            wait_for(lambda: bytes_waiting_at(port), REFUSAL_S, "the predict reaching the paused tritonserver")
            refusal = pool.submit(post, admitting_shim, PREDICT, predict_body(TEXTS[:1])).result(timeout=REFUSAL_S)
            assert_refused(refusal)
            assert "would wait" in refusal.json()["message"]
            control = pool.submit(requests.get, f"{admitting_shim.base}{LISTING}", timeout=120)
        assert held.result().status_code == 200
        assert control.result().status_code == 200  # waited for the paused Triton; never refused


def test_a_full_triton_queue_is_429_overloaded_and_control_still_gets_through(loaded, open_shim, overload_triton):
    with ThreadPoolExecutor(8) as pool:
        with paused(*backend_stubs(overload_triton)):
            # 64 texts fill a Triton batch alone: one executes (paused), one waits (the queue holds 1), the rest
            # are refused by Triton's queue policy.
            predicts = [pool.submit(post, open_shim, PREDICT, predict_body(TEXTS)) for _ in range(5)]
            refused = wait_for(
                lambda: [f for f in predicts if f.done()] if sum(f.done() for f in predicts) >= 3 else None,
                REFUSAL_S,
                "three refusals while two predicts are held",
            )
            for future in refused:
                assert_refused(future.result())
            control = pool.submit(requests.get, f"{open_shim.base}{LISTING}", timeout=120)
        assert control.result().status_code == 200
        assert sorted(f.result().status_code for f in predicts) == [200, 200, 429, 429, 429]
