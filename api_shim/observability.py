"""The shim's own Prometheus metrics, served at `GET /metrics`: requests by route and status, their latency,
those in flight, and whether the shim sees the backend ready.

gunicorn runs several worker processes, so prometheus_client runs in multiprocess mode there: each worker
writes its samples to files under PROMETHEUS_MULTIPROC_DIR (api_shim/gunicorn.conf.py sets it up and marks
dead workers), and a scrape, answered by any worker, sums them all. Without that variable (one process, as in
unit tests) the process's own registry answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lora_core.errors import AdapterError
from lora_core.metric_names import (
    LORA_API_ADMISSION_WAIT_SECONDS,
    LORA_API_BACKEND_READY,
    LORA_API_REFUSAL_SECONDS,
    LORA_API_REQUEST_SECONDS,
    LORA_API_REQUESTS_IN_FLIGHT,
    LORA_API_REQUESTS_TOTAL,
)
from lora_core.settings import read

UNMATCHED = "unmatched"  # every path that matches no route: fuzzed paths must not create new series

REQUESTS = Counter(LORA_API_REQUESTS_TOTAL, "HTTP requests answered, by route and status", ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    LORA_API_REQUEST_SECONDS,
    "Seconds from the request reaching a thread to its response, by route",
    ["endpoint"],
    # From a status probe (milliseconds) to a large predict on a CPU (tens of seconds).
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge(
    LORA_API_REQUESTS_IN_FLIGHT, "Requests being answered now, over every worker", multiprocess_mode="livesum"
)
PREDICT_ENDPOINT = "/api/v1/inference/predict"
REFUSAL_SECONDS = Histogram(
    LORA_API_REFUSAL_SECONDS,
    "Seconds from a predict refused for overload reaching the worker to its 429 being written",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

metrics_page = Blueprint("metrics", __name__)


def install(app: Flask) -> None:
    """Counts every request of `app`. Call it before any other before_request hook (the API key check), so
    that refused requests are counted too."""
    app.before_request(_started)
    app.after_request(_answered)
    app.teardown_request(_finished)
    app.register_blueprint(metrics_page)


def endpoint_label() -> str:
    """The route rule (`/api/v1/inference/predict`), never the raw path."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


def _started() -> None:
    g.metrics_started = time.perf_counter()
    IN_FLIGHT.inc()


def _answered(response: Response) -> Response:
    started = g.get("metrics_started")
    if started is not None:
        count_answer(endpoint_label(), response.status_code, time.perf_counter() - started)
    return response


def count_answer(endpoint: str, status: int, seconds: float) -> None:
    """A request of `endpoint` (its route rule) answered with `status` after `seconds`."""
    REQUESTS.labels(endpoint, str(status)).inc()
    REQUEST_SECONDS.labels(endpoint).observe(seconds)


def count_refusal(seconds: float) -> None:
    """A predict refused for overload by the worker's accept loop, without reaching Flask (api_shim/worker.py)."""
    REQUESTS.labels(PREDICT_ENDPOINT, "429").inc()
    REFUSAL_SECONDS.observe(seconds)


def _finished(_exc: BaseException | None) -> None:
    if g.pop("metrics_started", None) is not None:
        IN_FLIGHT.dec()


class BackendReady(Collector):
    """`lora_api_backend_ready`: 1 when the shim reaches Triton and its model is ready, asked at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            ready = current_app.extensions["triton_gateway"].model_ready()
        except AdapterError:
            ready = False
        yield GaugeMetricFamily(
            LORA_API_BACKEND_READY, "1 when the shim reaches Triton and the model is ready", value=float(ready)
        )


class AdmissionWait(Collector):
    """`lora_api_admission_wait_seconds`: the node's measured wait before a batch starts (api_shim/admission.py),
    read from the workers' shared account at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            LORA_API_ADMISSION_WAIT_SECONDS,
            "The least wait (for a thread, then in Triton until the batch starts) of the predicts answered in the "
            "last 100 ms, or the latest one for a second; 0 when none",
            value=current_app.extensions["admission"].measured_wait_s(),
        )


@metrics_page.get("/metrics")
def metrics() -> Response:
    counted = REGISTRY
    if read("PROMETHEUS_MULTIPROC_DIR"):  # set by gunicorn.conf.py's master
        counted = CollectorRegistry()  # a fresh one per scrape, summing every worker's files
        multiprocess.MultiProcessCollector(counted)
    live = CollectorRegistry()
    live.register(BackendReady())
    live.register(AdmissionWait())
    return Response(generate_latest(counted) + generate_latest(live), content_type=CONTENT_TYPE_LATEST)
