"""The shim's own metrics and pages, on the real app with Triton absent (a closed port)."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_shim.app import create_app
from api_shim.pages import NO_KEY_PATHS
from api_shim.settings import ShimSettings
from api_shim.status import merge_traffic, models_traffic
from lora_core.metric_names import (
    LORA_API_BACKEND_READY,
    LORA_API_REQUEST_SECONDS,
    LORA_API_REQUESTS_IN_FLIGHT,
    LORA_API_REQUESTS_TOTAL,
    LORA_REQUESTS_TOTAL,
    LORA_TEXTS_TOTAL,
)
from lora_core.prometheus import MetricsSnapshot
from testkit.process_harness import free_port


@pytest.fixture
def client(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # one process: its own registry answers
    port = free_port()
    settings = ShimSettings.load(
        {"TRITON_URL": f"127.0.0.1:{port}", "TRITON_METRICS_URL": f"http://127.0.0.1:{port}/metrics", "API_KEY": "k"}
    )
    return create_app(settings).test_client()


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def count(samples, endpoint: str, status: str) -> float:
    return samples.get((LORA_API_REQUESTS_TOTAL, (("endpoint", endpoint), ("status", status))), 0.0)


def test_requests_are_counted_by_route_and_status_never_by_raw_path(client):
    before = scrape(client)
    for path in ("/api/v1/nowhere", "/api/v1/../x", "/fuzz/%00/é"):
        client.get(path, headers={"X-API-Key": "k"})
    client.get("/api/v1/inference/models")  # no key: 401, still counted under its route
    client.get("/api/v1/health/live")
    after = scrape(client)
    assert count(after, "unmatched", "404") - count(before, "unmatched", "404") == 3
    assert count(after, "/api/v1/inference/models", "401") - count(before, "/api/v1/inference/models", "401") == 1
    assert count(after, "/api/v1/health/live", "200") - count(before, "/api/v1/health/live", "200") == 1
    endpoints = {dict(labels).get("endpoint") for name, labels in after if name == LORA_API_REQUESTS_TOTAL}
    assert not {e for e in endpoints if e and "fuzz" in e or e and "nowhere" in e}
    histogram = (f"{LORA_API_REQUEST_SECONDS}_count", (("endpoint", "/api/v1/health/live"),))
    assert after[histogram] - before.get(histogram, 0.0) == 1
    assert (LORA_API_REQUESTS_IN_FLIGHT, ()) in after


def test_backend_readiness_is_asked_at_scrape_time(client):
    assert scrape(client)[(LORA_API_BACKEND_READY, ())] == 0.0  # Triton is absent


def test_no_key_paths_answer_without_the_key_and_others_do_not(client):
    for path in ("/", "/metrics", "/api/v1/openapi.json", "/api/v1/health/live", "/api/v1/docs/"):
        assert path in NO_KEY_PATHS
        assert client.get(path).status_code == 200, path
    assert client.get("/api/v1/inference/status").status_code == 401


def test_the_console_runs_only_its_own_script(client):
    response = client.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert response.content_type.startswith("text/html")


def test_swagger_ui_is_served_locally_and_calls_no_other_host(client):
    page = client.get("/api/v1/docs/", base_url="http://shim.example:8123").get_data(as_text=True)
    assert "swagger-ui-bundle.js" in page
    assert set(re.findall(r"https?://[^/\"']*", page)) <= {"http://shim.example:8123"}  # its own host only
    assert '"validatorUrl": null' in page and '"url": "/api/v1/openapi.json"' in page
    bundle = client.get("/api/v1/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.get_data()) > 100_000
    assert client.get("/api/v1/openapi.json").json["servers"][0]["url"] == "/"


def test_counters_are_found_with_or_without_total():
    text = '# TYPE nv_inference_count counter\nnv_inference_count{model="m"} 5\n'
    text += f'# TYPE {LORA_REQUESTS_TOTAL} counter\n{LORA_REQUESTS_TOTAL}{{model_id="a"}} 3\n'
    snapshot = MetricsSnapshot(text)
    assert snapshot.value("nv_inference_count", model="m") == 5
    assert snapshot.value(LORA_REQUESTS_TOTAL, model_id="a") == 3


def test_a_malformed_scrape_keeps_the_families_read_before_it():
    text = "# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\nnot a sample line\n"
    snapshot = MetricsSnapshot(text)
    assert snapshot.value("a") == 1


def test_traffic_is_summed_over_instances_and_nodes():
    text = (
        f"# TYPE {LORA_REQUESTS_TOTAL} counter\n"
        f'{LORA_REQUESTS_TOTAL}{{model_id="a",instance="i0"}} 2\n'
        f'{LORA_REQUESTS_TOTAL}{{model_id="a",instance="i1"}} 3\n'
        f"# TYPE {LORA_TEXTS_TOTAL} counter\n"
        f'{LORA_TEXTS_TOTAL}{{model_id="a",instance="i0"}} 7\n'
        f'{LORA_TEXTS_TOTAL}{{model_id="b",instance="i1"}} 1\n'
    )
    one_node = models_traffic(MetricsSnapshot(text))
    assert one_node == [
        {"model_id": "a", "requests": 5, "texts": 7, "failures": 0},
        {"model_id": "b", "requests": 0, "texts": 1, "failures": 0},
    ]
    assert merge_traffic([one_node, one_node[:1]])[0] == {"model_id": "a", "requests": 10, "texts": 14, "failures": 0}
