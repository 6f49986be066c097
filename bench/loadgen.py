"""A closed-loop HTTP load generator: N clients, each sending its next predict as soon as the last is answered.

Clients are threads with one keep-alive connection each (http.client: little CPU per request, so the
generator takes as little as possible from the server it shares the machine with). Client `c` sends its
k-th request to adapter `(c + k) % len(model_ids)`, so concurrent requests mix adapters. Only requests
completed within the measured window (after the warm-up) count, for throughput and for latency.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    clients: int
    texts_per_request: int
    seconds: float
    texts_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    statuses: Counter = field(default_factory=Counter)  # HTTP status -> count, measured window only
    malformed: int = 0  # 200 answers whose body does not have one result per text

    def as_dict(self) -> dict:
        return {**self.__dict__, "statuses": {str(k): v for k, v in self.statuses.items()}}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def run_load(
    predict_url: str,
    model_ids: Sequence[str],
    texts: Sequence[str],
    texts_per_request: int,
    clients: int,
    seconds: float,
    warmup: float = 2.0,
    timeout: float = 120.0,
) -> LoadResult:
    """Drive `predict_url` for warmup + seconds with `clients` closed-loop clients; see the module doc."""
    parts = urlsplit(predict_url)
    bodies = [
        [
            json.dumps({"model_id": model_id, "texts": _texts_for(texts, texts_per_request, c, k), "top_n": 1}).encode()
            for k, model_id in enumerate(model_ids)
        ]
        for c in range(clients)
    ]
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    records: list[list[tuple[float, float, int, bool]]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        mine, k = records[index], index
        try:
            while (sent := time.perf_counter()) < stop_at:
                body = bodies[index][k % len(model_ids)]
                k += 1
                try:
                    connection.request("POST", parts.path, body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    payload = response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                    status, payload = 0, b""
                done = time.perf_counter()
                well_formed = status != 200 or _has_rows(payload, texts_per_request)
                mine.append((sent, done, status, well_formed))
        except BaseException as exc:  # surfaces in the caller instead of dying silently in a thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    counted = [r for mine in records for r in mine if measure_from <= r[1] <= stop_at]
    window = stop_at - measure_from
    latencies = [(done - sent) * 1000 for sent, done, _, _ in counted]
    ok = [r for r in counted if r[2] == 200]
    return LoadResult(
        clients=clients,
        texts_per_request=texts_per_request,
        seconds=window,
        texts_per_s=len(ok) * texts_per_request / window,
        requests_per_s=len(counted) / window,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=percentile(latencies, 99),
        statuses=Counter(r[2] for r in counted),
        malformed=sum(1 for r in counted if not r[3]),
    )


def _texts_for(texts: Sequence[str], count: int, client: int, k: int) -> list[str]:
    first = (client * 7 + k * count) % len(texts)
    return [texts[(first + i) % len(texts)] for i in range(count)]


def _has_rows(payload: bytes, count: int) -> bool:
    try:
        body = json.loads(payload)
        return len(body["labels"]) == count and len(body["label_probabilities"]) == count
    except (ValueError, KeyError, TypeError):
        return False
