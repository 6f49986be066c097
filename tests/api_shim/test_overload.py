"""Overload, against a real tritonserver and real gunicorn shims: excess predicts are refused at once with
429 overloaded and Retry-After, and control operations are never refused.

This module starts its own tritonserver (1 CPU instance, TRITON_MAX_QUEUE_SIZE=1) and pauses it with
SIGSTOP, so that what is in flight is certain rather than a matter of timing:

- the shim's admission (ADMISSION_MAX_WAIT_S): with tritonserver paused, both of the shim's threads holding a
  predict (their bytes wait in tritonserver's socket) and a third predict waiting for a thread, every further
  predict is refused at once by the worker's accept loop, on kept-alive and new connections alike; control
  sent meanwhile is not refused;
- Triton's own queue bound: with the model's backend stub paused, one 64-text predict executes, one waits in
  the queue, and every further one comes back from Triton refused, which the shim answers 429, never 500;
  a control operation, at Triton's priority level 1, still gets in.
"""

from __future__ import annotations

import http.client
import json
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

from lora_core.metric_names import LORA_API_REFUSAL_SECONDS, LORA_API_REQUESTS_TOTAL
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


ADMISSION_MAX_WAIT_S = 0.3


@pytest.fixture(scope="module")
def admitting_shim(tmp_path_factory, overload_triton):
    """Two threads: fewer than the test's clients, as under any real overload."""
    server = start_shim(
        tmp_path_factory, overload_triton, ADMISSION_MAX_WAIT_S=str(ADMISSION_MAX_WAIT_S), GUNICORN_THREADS="2"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_shim(tmp_path_factory, overload_triton):
    """Admission off and no coalescing: every predict reaches Triton's queue (coalescing would hold all but
    COALESCE_IN_FLIGHT of them in the shim, to go together once a request comes back)."""
    server = start_shim(tmp_path_factory, overload_triton, ADMISSION_MAX_WAIT_S="0", COALESCE_IN_FLIGHT="0")
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


def connections_with_bytes_waiting_at(port: int) -> int:
    """Sockets of this local TCP port holding bytes received and not yet read (/proc/net/tcp's rx_queue): a
    paused tritonserver's, once requests have reached it."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and int(fields[4].split(":")[1], 16):
            count += 1
    return count


def raw_predict(connection: http.client.HTTPConnection, texts: list[str]) -> tuple[int, dict, dict]:
    body = json.dumps(predict_body(texts))
    connection.request("POST", "/api/v1" + PREDICT, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read()), dict(response.getheaders())


def test_with_every_thread_held_a_predict_that_would_wait_is_refused_at_once_by_the_accept_loop(
    loaded, admitting_shim, overload_triton
):
    """Two threads, both holding a request that a paused tritonserver does not answer (a predict and a control
    operation), and a third predict waiting for a thread: every further predict would wait longer than
    ADMISSION_MAX_WAIT_S, and only the worker's accept loop can answer it. Control operations are never
    refused."""
    triton, port = tritonserver(overload_triton), overload_triton.http_port
    kept = http.client.HTTPConnection("127.0.0.1", admitting_shim.port, timeout=REFUSAL_S)
    assert raw_predict(kept, TEXTS[:1])[0] == 200  # a kept-alive connection, as clients keep them
    with ThreadPoolExecutor(4) as pool:
        with paused(triton):
            # One thread holds a predict, the other a control operation (Triton's queue here holds one predict).
            held = [
                pool.submit(post, admitting_shim, PREDICT, predict_body(TEXTS[:1])),
                pool.submit(requests.get, f"{admitting_shim.base}{LISTING}", timeout=120),
            ]
            wait_for(lambda: connections_with_bytes_waiting_at(port) >= 2, REFUSAL_S, "both reaching Triton")
            queued = pool.submit(post, admitting_shim, PREDICT, predict_body(TEXTS[:1]))  # no thread for it
            time.sleep(ADMISSION_MAX_WAIT_S + 0.2)  # a duration to wait for a thread, not a guess at a condition

            refusals = [raw_predict(kept, TEXTS[:1]), raw_predict(kept, TEXTS)]  # the same connection, kept open
            fresh = http.client.HTTPConnection("127.0.0.1", admitting_shim.port, timeout=REFUSAL_S)
            refusals.append(raw_predict(fresh, TEXTS[:2]))  # a new connection: its request arrives after accept
            for status, body, headers in refusals:
                assert status == 429, body
                assert body["error"] == "overloaded"
                assert body["wait_s"] > ADMISSION_MAX_WAIT_S
                assert int(headers["Retry-After"]) >= 1
            control = pool.submit(requests.get, f"{admitting_shim.base}{LISTING}", timeout=120)
        assert [f.result().status_code for f in held] == [200, 200]
        assert queued.result().status_code in (200, 429)  # it waited longer than the limit for its thread
        assert control.result().status_code == 200  # waited for a thread; never refused
    assert raw_predict(kept, TEXTS[:1])[0] == 200  # room again: the same connection is served
    metrics = requests.get(f"{admitting_shim.origin}/metrics", timeout=10).text
    refused = metric_value(metrics, f'{LORA_API_REQUESTS_TOTAL}{{endpoint="/api/v1/inference/predict",status="429"}}')
    assert refused >= 3
    assert metric_value(metrics, f"{LORA_API_REFUSAL_SECONDS}_count") >= 3


def metric_value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in the metrics:\n{text}")


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
