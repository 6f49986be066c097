"""With API_KEY set, every /inference endpoint needs the key; exactly the probes, the metrics, the OpenAPI
document and the pages (console, Swagger UI) never do."""

from __future__ import annotations

import http.client

import pytest
import requests

from api_shim.pages import NO_KEY_PATHS

from testkit.api_shim_env import shim_env
from testkit.shim_harness import ShimServer

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, triton):
    server = ShimServer(tmp_path_factory.mktemp("keyed"), {**shim_env(triton), "API_KEY": KEY, "GUNICORN_WORKERS": "1"})
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/inference/models"),
        ("GET", "/inference/status"),
        ("POST", "/inference/predict"),
        ("POST", "/inference/models/load"),
        ("POST", "/inference/models/unload"),
        ("POST", "/inference/models/query"),
    ],
)
@pytest.mark.parametrize(
    "headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}]
)
def test_missing_or_wrong_keys_are_unauthorized(keyed, method, path, headers):
    response = requests.request(method, f"{keyed.base}{path}", headers=headers, json={}, timeout=30)
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "message": "a valid API key is required (X-API-Key header or Authorization: Bearer)",
    }


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}])
def test_the_right_key_is_let_through(keyed, headers):
    response = requests.get(f"{keyed.base}/inference/models", headers=headers, timeout=30)
    assert response.status_code == 200 and "models" in response.json()


def test_health_probes_need_no_key(keyed):
    assert requests.get(f"{keyed.base}/health/live", timeout=30).status_code == 200
    assert requests.get(f"{keyed.base}/health/ready", timeout=30).status_code == 200


def test_exactly_the_listed_paths_need_no_key(keyed):
    expected = {"/", "/metrics", "/api/v1/openapi.json", "/api/v1/docs/", "/api/v1/docs/swagger-ui-bundle.js"}
    assert expected <= NO_KEY_PATHS
    for path in sorted(NO_KEY_PATHS):
        response = requests.get(f"{keyed.origin}{path}", timeout=30, allow_redirects=False)
        assert response.status_code in (200, 308), f"{path} answered {response.status_code} without a key"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/docs/../inference/status",  # a prefix of a no-key path never lets another through
        "/api/v1/docs/missing.js",
        "/api/v1/health/live/extra",
        "/api/v1/openapi.jsonx",
        "/metrics/",
        "/index.html",
        "/api/v1/inference/status/",
    ],
)
def test_paths_near_the_no_key_ones_need_the_key(keyed, path):
    connection = http.client.HTTPConnection("127.0.0.1", keyed.port, timeout=30)  # sends the path unnormalized
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    finally:
        connection.close()
    assert status == 401, f"{path} answered {status}"
