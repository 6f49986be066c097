"""Nothing behind the API key is reachable around it through Triton: control needs the shared secret, and every
API but inference, health and metadata needs it in a header."""

from __future__ import annotations

import json

import psutil
import pytest
import requests
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from lora_core.control_token import RESTRICTED_API_HEADER
from testkit.triton_harness import MODEL, LoraClient, expect_error

RESTRICTED = [  # (method, path) of each restricted API
    ("POST", "/v2/repository/index"),
    ("GET", f"/v2/models/{MODEL}/config"),
    ("GET", f"/v2/models/{MODEL}/stats"),
    ("GET", "/v2/trace/setting"),
    ("GET", "/v2/logging"),
    ("GET", "/v2/systemsharedmemory/status"),
    ("POST", f"/v2/repository/models/{MODEL}/unload"),
]
OPEN = [
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", f"/v2/models/{MODEL}/ready"),
    ("GET", "/v2"),
    ("GET", f"/v2/models/{MODEL}"),
]


def raw_control(url: str, document: dict) -> requests.Response:
    """A CONTROL request as anyone could send it, over Triton's JSON protocol."""
    body = {"inputs": [{"name": "CONTROL", "shape": [1, 1], "datatype": "BYTES", "data": [json.dumps(document)]}]}
    return requests.post(f"http://{url}/v2/models/{MODEL}/infer", json=body, timeout=30)


@pytest.mark.parametrize("token", [None, "", "wrong", "x" * 10_000, 7])
def test_control_without_the_secret_is_refused_and_changes_nothing(triton, client, token):
    client.control({"op": "load", "model_dir": "gamma"})
    before = loaded_entries(client)
    for document in (
        {"op": "load", "model_dir": "alpha"},
        {"op": "unload", "model_id": "gamma"},
        {"op": "list"},
        {"op": "status"},
        {"op": "load", "model_dir": "gamma", "reload": True},
    ):
        sent = document if token is None else {**document, "token": token}
        response = raw_control(triton.url, sent)
        assert response.status_code == 400 and "[unauthorized]" in response.json()["error"], response.text
        assert "models" not in response.text and "gamma" not in response.text
    assert loaded_entries(client) == before
    assert client.loaded() == ["gamma"]


def loaded_entries(client) -> list[dict]:
    """The listing's loaded part (its unloaded part may take in an output another test just made or removed),
    without `load_seconds`: each of the 2 instances measured its own load, and either may answer."""
    models = client.control({"op": "list"})["models"]
    return [{k: v for k, v in m.items() if k != "load_seconds"} for m in models if m["status"] == "loaded"]


def test_a_wrong_secret_through_the_client_is_unauthorized(triton, client):
    error = expect_error("unauthorized", LoraClient(triton.url, token="not-the-secret").control, {"op": "list"})
    assert "CONTROL_TOKEN" in error.message
    assert client.control({"op": "list"})["models"]  # the right one works


def test_inference_needs_no_secret(triton, client):
    client.control({"op": "load", "model_dir": "alpha"})
    body = {
        "inputs": [
            {"name": n, "shape": [1, 1], "datatype": "BYTES", "data": [v]}
            for n, v in (("TEXT", "baba"), ("MODEL_ID", "alpha"))
        ]
    }
    response = requests.post(f"http://{triton.url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("method, path", RESTRICTED)
def test_restricted_apis_refuse_requests_without_the_header(triton, method, path):
    for headers in ({}, {RESTRICTED_API_HEADER: "wrong"}):
        response = requests.request(method, f"http://{triton.url}{path}", headers=headers, timeout=30)
        assert response.status_code == 403 and "restricted" in response.text, (
            path,
            response.status_code,
            response.text,
        )
    assert requests.get(f"http://{triton.url}/v2/health/ready", timeout=10).status_code == 200  # nothing unloaded


@pytest.mark.parametrize("method, path", [r for r in RESTRICTED if "unload" not in r[1]])
def test_restricted_apis_answer_the_secret(triton, method, path):
    headers = {RESTRICTED_API_HEADER: triton.control_token}
    response = requests.request(method, f"http://{triton.url}{path}", headers=headers, timeout=30)
    assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("method, path", OPEN)
def test_health_and_metadata_stay_open(triton, method, path):
    assert requests.request(method, f"http://{triton.url}{path}", timeout=30).status_code == 200


def test_grpc_restricts_the_same_apis(triton):
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{triton.grpc_port}")
    assert client.is_server_live()
    for call in (client.get_model_repository_index, lambda: client.get_model_config(MODEL)):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    # gRPC clients send the header with Triton's prefix
    headers = {f"triton-grpc-protocol-{RESTRICTED_API_HEADER}": triton.control_token}
    assert client.get_model_config(MODEL, headers=headers).config.name == MODEL


def test_the_ports_listen_on_loopback(triton):
    server = psutil.Process(triton.server.process.pid)
    listening = {c.laddr for c in server.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert {a.port for a in listening} == {triton.http_port, triton.grpc_port, triton.metrics_port}
    assert {a.ip for a in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
