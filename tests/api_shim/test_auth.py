"""With API_KEY set, every /inference endpoint needs the key; health probes never do."""

from __future__ import annotations

import pytest
import requests

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
        ("GET", "/openapi.json"),
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
