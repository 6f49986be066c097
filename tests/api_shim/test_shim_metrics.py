"""`GET /metrics` under a real gunicorn with 2 workers: requests are counted by route and status over every
worker, whichever worker answers the scrape, and a worker's counts survive its death."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from lora_core.metric_names import LORA_API_REQUESTS_IN_FLIGHT, LORA_API_REQUESTS_TOTAL
from testkit.api_shim_env import shim_env
from testkit.conditions import wait_for
from testkit.shim_harness import ShimServer

LIVE = "/api/v1/health/live"


@pytest.fixture(scope="module")
def counted(tmp_path_factory, triton):
    directory = tmp_path_factory.mktemp("metrics-dir")
    env = {**shim_env(triton), "GUNICORN_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    server = ShimServer(tmp_path_factory.mktemp("counted"), env)
    server.start()
    yield server, directory
    server.stop()


def answered(server: ShimServer, endpoint: str, status: str = "200") -> float:
    """The count one scrape reports, answered by whichever worker takes it (a fresh connection each time)."""
    text = requests.get(f"{server.origin}/metrics", timeout=30, headers={"Connection": "close"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LORA_API_REQUESTS_TOTAL and sample.labels == {"endpoint": endpoint, "status": status}:
                return sample.value
    return 0.0


def workers(server: ShimServer) -> list[int]:
    assert server.server.process is not None
    return [child.pid for child in psutil.Process(server.server.process.pid).children()]


def hit(server: ShimServer, times: int) -> None:
    def one(_: int) -> int:
        return requests.get(f"{server.origin}{LIVE}", timeout=30, headers={"Connection": "close"}).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(one, range(times))) == {200}


def test_counts_sum_over_every_worker_whichever_answers(counted):
    server, directory = counted
    pids = wait_for(lambda: len(workers(server)) == 2 and workers(server), 30, "2 gunicorn workers")
    before = answered(server, LIVE)

    def both_workers_counted() -> bool:
        hit(server, 32)
        return all(any(directory.glob(f"counter_{pid}.db")) for pid in pids)

    wait_for(both_workers_counted, 60, "both workers answered some requests")
    sent = answered(server, LIVE) - before  # includes this helper's rounds; every later scrape must agree
    assert sent >= 32 and sent % 32 == 0
    assert {answered(server, LIVE) - before for _ in range(8)} == {sent}


def test_a_dead_workers_counts_are_kept(counted):
    server, _ = counted
    hit(server, 16)
    total = answered(server, LIVE)
    victim = workers(server)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(workers(server)) == 2 and victim not in workers(server), 30, "gunicorn replaced the worker")
    assert answered(server, LIVE) == total
    text = requests.get(f"{server.origin}/metrics", timeout=30).text
    assert f"{LORA_API_REQUESTS_IN_FLIGHT} 1.0" in text  # the scrape itself, over both workers
