"""A closed-loop HTTP load generator: N clients, each sending its next predict as soon as the last is answered.

Clients are threads with one keep-alive connection each (http.client: little CPU per request, so the
generator takes as little as possible from the server it shares the machine with). Client `c` sends its
k-th request to adapter `(c + k) % len(model_ids)`, so concurrent requests mix adapters. Only requests
completed within the measured window (after the warm-up) count, for throughput and for latency. A client
refused with 429 backs off as the README tells clients to (`retry_delay_s`): Retry-After, doubled at each
refusal in a row, each wait drawn between half and all of it, so that refused clients do not come back
together.
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from testkit.measure import percentile


@dataclass
class LoadResult:
    clients: int
    texts_per_request: int
    seconds: float
    texts_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    ok_p99_ms: float  # the answered (200) requests only
    refused_p99_ms: float  # the refused (429) requests only; 0 when none
    statuses: Counter = field(default_factory=Counter)  # HTTP status -> count, measured window only
    malformed: int = 0  # 200 answers whose body does not have one result per text
    latencies_ms: list[float] = field(default_factory=list)  # every counted request's, with keep_latencies
    ok_latencies_ms: list[float] = field(default_factory=list)  # the answered ones', with keep_latencies
    refused_latencies_ms: list[float] = field(default_factory=list)  # the refused ones', with keep_latencies

    def as_dict(self) -> dict:
        return {**self.__dict__, "statuses": {str(k): v for k, v in self.statuses.items()}}


@dataclass(frozen=True)
class Protocol:
    """How a predict of `texts` on one adapter is written, and how a 200 answer is checked for one row per text."""

    path: str
    body: Callable[[str, list[str], int | None], bytes]  # model id, texts, batch_size (the shim's; None: default)
    has_rows: Callable[[bytes, int], bool]


def _shim_body(model_id: str, texts: list[str], batch_size: int | None = None) -> bytes:
    body: dict = {"model_id": model_id, "texts": texts, "top_n": 1}
    if batch_size is not None:
        body["batch_size"] = batch_size
    return json.dumps(body).encode()


def _shim_has_rows(payload: bytes, count: int) -> bool:
    try:
        body = json.loads(payload)
        return len(body["labels"]) == count and len(body["label_probabilities"]) == count
    except (ValueError, KeyError, TypeError):
        return False


def _triton_body(model_id: str, texts: list[str], batch_size: int | None = None) -> bytes:
    shape = [len(texts), 1]
    return json.dumps(
        {
            "inputs": [
                {"name": "TEXT", "shape": shape, "datatype": "BYTES", "data": texts},
                {"name": "MODEL_ID", "shape": shape, "datatype": "BYTES", "data": [model_id] * len(texts)},
            ],
            "outputs": [{"name": "PROBABILITIES"}, {"name": "NUM_LABELS"}],
        }
    ).encode()


def _triton_has_rows(payload: bytes, count: int) -> bool:
    try:
        outputs = {o["name"]: o for o in json.loads(payload)["outputs"]}
        return outputs["NUM_LABELS"]["shape"] == [count, 1] and outputs["PROBABILITIES"]["shape"][0] == count
    except (ValueError, KeyError, TypeError, IndexError):
        return False


# The REST contract's POST /api/v1/inference/predict, and Triton's own HTTP/JSON inference protocol (KServe
# v2) straight to lora_classifier: `url` is then the server's base URL.
SHIM = Protocol("/api/v1/inference/predict", _shim_body, _shim_has_rows)
TRITON = Protocol("/v2/models/lora_classifier/infer", _triton_body, _triton_has_rows)


def run_load(
    predict_url: str,
    model_ids: Sequence[str],
    texts: Sequence[str],
    texts_per_request: int,
    clients: int,
    seconds: float,
    warmup: float = 2.0,
    timeout: float = 120.0,
    protocol: Protocol = SHIM,
    keep_latencies: bool = False,
    batch_size: int | None = None,
    texts_of: Callable[[int, int], list[str]] | None = None,
) -> LoadResult:
    """Drive `predict_url` for warmup + seconds with `clients` closed-loop clients; see the module doc.
    With `protocol=TRITON`, `predict_url` is Triton's base URL. `texts_of(client, k)`, when given, is the
    texts of a client's k-th request (`texts_per_request` of them) instead of a slice of `texts`."""
    parts = urlsplit(predict_url)
    path = parts.path if protocol is SHIM else protocol.path
    texts_of = texts_of or (lambda c, k: _texts_for(texts, texts_per_request, c, k))
    bodies = [
        [protocol.body(model_id, texts_of(c, k), batch_size) for k, model_id in enumerate(model_ids)]
        for c in range(clients)
    ]
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    records: list[list[tuple[float, float, int, bool]]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        mine, k = records[index], index
        rng, refusals, used = random.Random(index), 0, False
        try:
            while (sent := time.perf_counter()) < stop_at:
                body = bodies[index][k % len(model_ids)]
                k += 1
                try:
                    try:
                        connection.request("POST", path, body, {"Content-Type": "application/json"})
                        response = connection.getresponse()
                    except (ConnectionError, http.client.RemoteDisconnected):
                        if not used:
                            raise
                        # The server closed the kept-alive connection while this client backed off (gunicorn
                        # keeps an idle one GUNICORN_KEEPALIVE seconds): sent again on a new one, as HTTP
                        # clients do (urllib3's retry of a stale pooled connection).
                        connection.close()
                        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                        connection.request("POST", path, body, {"Content-Type": "application/json"})
                        response = connection.getresponse()
                    payload = response.read()
                    status = response.status
                    retry_after = response.getheader("Retry-After") if status == 429 else None
                    used = True
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                    status, payload, retry_after, used = 0, b"", None, False
                done = time.perf_counter()
                well_formed = status != 200 or protocol.has_rows(payload, texts_per_request)
                mine.append((sent, done, status, well_formed))
                if retry_after is not None:
                    refusals += 1
                    delay = retry_delay_s(float(retry_after), refusals, rng)
                    time.sleep(max(0.0, min(delay, stop_at - done)))
                else:
                    refusals = 0
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
    ok_ms = [(done - sent) * 1000 for sent, done, _, _ in ok]
    refused = [(done - sent) * 1000 for sent, done, status, _ in counted if status == 429]
    return LoadResult(
        clients=clients,
        texts_per_request=texts_per_request,
        seconds=window,
        texts_per_s=len(ok) * texts_per_request / window,
        requests_per_s=len(counted) / window,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=percentile(latencies, 99),
        ok_p99_ms=percentile(ok_ms, 99),
        refused_p99_ms=percentile(refused, 99),
        statuses=Counter(r[2] for r in counted),
        malformed=sum(1 for r in counted if not r[3]),
        latencies_ms=latencies if keep_latencies else [],
        ok_latencies_ms=ok_ms if keep_latencies else [],
        refused_latencies_ms=refused if keep_latencies else [],
    )


# The longest a refused client waits before it sends again.
RETRY_CAP_S = 30.0


def retry_delay_s(retry_after_s: float, refusals_in_a_row: int, rng: random.Random) -> float:
    """Jittered exponential backoff from Retry-After: the n-th refusal in a row waits between half and all of
    Retry-After x 2^(n-1), at most RETRY_CAP_S."""
    ceiling = min(RETRY_CAP_S, retry_after_s * 2 ** (refusals_in_a_row - 1))
    return rng.uniform(ceiling / 2, ceiling)


def _texts_for(texts: Sequence[str], count: int, client: int, k: int) -> list[str]:
    first = (client * 7 + k * count) % len(texts)
    return [texts[(first + i) % len(texts)] for i in range(count)]


@dataclass
class LonePair:
    """A lone request's latencies, in-process and served, from blocks taken in turn (ms)."""

    in_process_ms: list[float]
    served_ms: list[float]


def lone_pair(
    in_process: Callable[[str], object],
    predict_url: str,
    model_id: str,
    texts: Sequence[str],
    blocks: int = 10,
    per_block: int = 20,
    timeout: float = 60.0,
) -> LonePair:
    """One client sending one text at a time, served (`predict_url`, the shim's protocol) and in-process
    (`in_process(text)`), in alternating blocks of `per_block` calls each: on a shared machine whose speed drifts
    by tens of percent over seconds, both sides then see the same machine, where windows taken one after the
    other do not. Each block starts with one uncounted call, so neither side pays for the other's cold start."""
    parts = urlsplit(predict_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    bodies = [SHIM.body(model_id, [text], None) for text in texts]

    def served(i: int) -> None:
        connection.request("POST", parts.path, bodies[i % len(bodies)], {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200 or not SHIM.has_rows(payload, 1):
            raise RuntimeError(f"a lone predict answered {response.status}: {payload[:200]!r}")

    def local(i: int) -> None:
        in_process(texts[i % len(texts)])

    pair = LonePair([], [])
    try:
        for block in range(blocks):
            for call, into in ((local, pair.in_process_ms), (served, pair.served_ms)):
                call(block)
                for i in range(per_block):
                    started = time.perf_counter()
                    call(block * per_block + i)
                    into.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    return pair
