"""bench/loadgen.py's closed-loop clients spread over several processes, so that the client is not the limit
(one Python process of threads saturates near one core), with the clients' own CPU reported.

    result = run_processes(url, model_ids, texts, texts_per_request=1, clients=32, seconds=8, processes=2)
    result.load          # one LoadResult for every client, as run_load gives for one process
    result.client_cpu_s  # CPU seconds the client processes spent within the measured window

Each process runs `python -m bench.multiclient` with its share of the clients, starts at a common instant
(so that every warm-up and every measured window is the same), and writes its LoadResult, latencies
included, and its CPU time within the window as one JSON line.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from collections.abc import Sequence

from bench.loadgen import SHIM, TRITON, LoadResult, _texts_for, run_load
from testkit.measure import percentile

PROTOCOLS = {"shim": SHIM, "triton": TRITON}
START_DELAY_S = 1.5  # time for every process to import and connect before the common start


@dataclass
class MultiResult:
    load: LoadResult
    client_cpu_s: float  # the client processes' CPU within the measured window
    processes: int


def run_processes(
    url: str,
    model_ids: Sequence[str],
    texts: Sequence[str],
    texts_per_request: int,
    clients: int,
    seconds: float,
    processes: int,
    warmup: float = 2.0,
    protocol: str = "shim",
    start_at: float | None = None,
) -> MultiResult:
    """`clients` closed-loop clients over `processes` processes (as even as can be), all measuring the same
    window: from `warmup` after a common start (time.time() `start_at`; default START_DELAY_S from now), for
    `seconds`."""
    processes = max(1, min(processes, clients))
    start_at = start_at if start_at is not None else time.time() + START_DELAY_S
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    children = []
    first_client = 0
    for share in shares:
        job = {
            "url": url,
            "model_ids": list(model_ids),
            "texts": list(texts),
            "texts_per_request": texts_per_request,
            "clients": share,
            "first_client": first_client,
            "seconds": seconds,
            "warmup": warmup,
            "start_at": start_at,
            "protocol": protocol,
        }
        first_client += share
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.multiclient"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
        children[-1].stdin.write(json.dumps(job))
        children[-1].stdin.close()
    answers = []
    for child in children:
        out = child.stdout.read()
        if child.wait() != 0:
            raise RuntimeError(f"a client process failed ({child.returncode})")
        answers.append(json.loads(out))
    return MultiResult(
        merge([a["load"] for a in answers]),
        sum(a["cpu_s"] for a in answers),
        processes,
    )


def merge(loads: list[dict]) -> LoadResult:
    latencies = [ms for load in loads for ms in load["latencies_ms"]]
    ok = [ms for load in loads for ms in load["ok_latencies_ms"]]
    refused = [ms for load in loads for ms in load["refused_latencies_ms"]]
    statuses: Counter = Counter()
    for load in loads:
        statuses.update({int(k): v for k, v in load["statuses"].items()})
    return LoadResult(
        clients=sum(load["clients"] for load in loads),
        texts_per_request=loads[0]["texts_per_request"],
        seconds=loads[0]["seconds"],
        texts_per_s=sum(load["texts_per_s"] for load in loads),
        requests_per_s=sum(load["requests_per_s"] for load in loads),
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=percentile(latencies, 99),
        ok_p99_ms=percentile(ok, 99),
        refused_p99_ms=percentile(refused, 99),
        statuses=statuses,
        malformed=sum(load["malformed"] for load in loads),
        latencies_ms=latencies,
        ok_latencies_ms=ok,
        refused_latencies_ms=refused,
    )


def _cpu_within(start: float, end: float) -> tuple[threading.Thread, list[float]]:
    """A thread that reads this process's CPU time at time.time() `start` and `end`."""
    readings: list[float] = []

    def read() -> None:
        for at in (start, end):
            time.sleep(max(0.0, at - time.time()))
            readings.append(time.process_time())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, readings


def _child() -> int:
    job = json.loads(sys.stdin.read())
    protocol = PROTOCOLS[job["protocol"]]
    first = job["first_client"]
    texts, count = job["texts"], job["texts_per_request"]

    def texts_of(client: int, k: int) -> list[str]:  # bench/loadgen.py's, the clients numbered across processes
        return _texts_for(texts, count, client + first, k)

    time.sleep(max(0.0, job["start_at"] - time.time()))
    measured_from = job["start_at"] + job["warmup"]
    reader, cpu = _cpu_within(measured_from, measured_from + job["seconds"])
    load = run_load(
        job["url"],
        job["model_ids"],
        texts,
        count,
        job["clients"],
        job["seconds"],
        warmup=job["warmup"],
        protocol=protocol,
        keep_latencies=True,
        texts_of=texts_of,
    )
    reader.join()
    print(json.dumps({"load": load.as_dict(), "cpu_s": cpu[1] - cpu[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
