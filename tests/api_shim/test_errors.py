"""Every error of the contract's table, triggered for real, with its HTTP status and JSON body."""

from __future__ import annotations

import json

import pytest
import requests

from conftest import MAX_ADAPTERS

LOAD, UNLOAD, PREDICT, QUERY = (
    "/inference/models/load",
    "/inference/models/unload",
    "/inference/predict",
    "/inference/models/query",
)


def assert_error(response: requests.Response, status: int, code: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    assert words in body["message"], body["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "path, body, words",
    [
        (LOAD, {}, "model_dir is required"),
        (LOAD, {"model_dir": 5}, "model_dir must be a string, got integer"),
        (LOAD, {"model_dir": ""}, "model_dir must not be empty"),
        (LOAD, {"model_dir": "../etc"}, "'..'"),
        (LOAD, {"model_dir": "/etc/passwd"}, "relative to the models root"),
        (LOAD, {"model_dir": "alpha", "max_length": "512"}, "max_length must be an integer, got string"),
        (LOAD, {"model_dir": "alpha", "max_length": 0}, "max_length must be between"),
        (LOAD, {"model_dir": "alpha", "max_length": 100000}, "max_length must be between 2 and 512"),
        (LOAD, {"model_dir": "alpha", "reload": "true"}, "reload must be true or false"),
        (UNLOAD, {"model_id": None}, "model_id is required"),
        (UNLOAD, {"model_id": ["alpha"]}, "model_id must be a string, got array"),
        (PREDICT, {"model_id": "alpha"}, "texts is required"),
        (PREDICT, {"model_id": "alpha", "texts": "one text"}, "texts must be a list of strings, got string"),
        (PREDICT, {"model_id": "alpha", "texts": []}, "texts must not be empty"),
        (PREDICT, {"model_id": "alpha", "texts": ["a", 3]}, "texts[1] must be a string, got integer"),
        (PREDICT, {"model_id": "alpha", "texts": ["a"], "top_n": 0}, "top_n must be between 1 and 50"),
        (PREDICT, {"model_id": "alpha", "texts": ["a"], "top_n": 2.5}, "top_n must be an integer, got number"),
        (PREDICT, {"model_id": "alpha", "texts": ["a"], "batch_size": 0}, "batch_size must be between 1 and 64"),
        (PREDICT, {"model_id": "alpha", "texts": ["a"], "batch_size": 65}, "batch_size must be between 1 and 64"),
        (
            PREDICT,
            {"model_id": "alpha", "texts": ["a"], "batch_size": True},
            "batch_size must be an integer, got boolean",
        ),
        (QUERY, {"model_ids": [1]}, "model_ids[0] must be a string"),
    ],
)
def test_invalid_request(api, path, body, words):
    assert_error(api.post(path, json=body), 400, "invalid_request", words)


@pytest.mark.parametrize(
    "data, headers, words",
    [
        ("{not json", {"Content-Type": "application/json"}, "not valid JSON"),
        ('["a list"]', {"Content-Type": "application/json"}, "must be a JSON object"),
        ('{"model_dir": "alpha"}', {"Content-Type": "text/plain"}, "must be JSON"),
        ("", {"Content-Type": "application/json"}, "not valid JSON"),
    ],
)
def test_malformed_bodies_are_invalid_requests(api, data, headers, words):
    assert_error(api.post(LOAD, data=data, headers=headers), 400, "invalid_request", words)


def test_model_not_found(api):
    assert_error(api.post(LOAD, json={"model_dir": "no/such/dir"}), 404, "model_not_found", "no/such/dir")


def test_model_not_loaded(api):
    assert_error(api.post(PREDICT, json={"model_id": "gamma", "texts": ["x"]}), 404, "model_not_loaded", "gamma")
    assert_error(api.post(UNLOAD, json={"model_id": "gamma"}), 404, "model_not_loaded", "gamma")


def test_invalid_model(api):
    assert_error(api.post(LOAD, json={"model_dir": "broken"}), 422, "invalid_model", "broken/model.head.pt.pkl")


def test_capacity_exceeded(api):
    ids = ["alpha", "team/beta", "gamma"] + [f"bench-{i}" for i in range(8)]
    for model_id in ids[:MAX_ADAPTERS]:
        assert api.post(LOAD, json={"model_dir": model_id}).status_code == 200
    assert_error(
        api.post(LOAD, json={"model_dir": ids[MAX_ADAPTERS]}), 507, "capacity_exceeded", f"maximum is {MAX_ADAPTERS}"
    )


@pytest.mark.parametrize(
    "body, words",
    [
        ({"model_id": "alpha", "texts": ["x"] * 65}, "texts has 65 items; the limit is 64"),
        ({"model_id": "alpha", "texts": ["x" * 5001]}, "texts[0] is 5001 characters long; the limit is 5000"),
        ({"model_id": "alpha", "texts": ["x"], "pad": "y" * 300_000}, "larger than 262144 bytes"),
    ],
)
def test_payload_too_large(api, body, words):
    assert_error(api.post(PREDICT, json=body), 413, "payload_too_large", words)


def test_an_oversized_body_is_refused_before_it_is_parsed(api):
    data = json.dumps({"model_id": "alpha", "texts": ["x" * 1000] * 300})
    assert_error(api.post(PREDICT, data=data, headers={"Content-Type": "application/json"}), 413, "payload_too_large")


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/inference/nothing-here", 404), ("GET", "/inference/predict", 405), ("DELETE", "/inference/models", 405)],
)
def test_unknown_paths_and_methods_answer_json_errors(api, method, path, status):
    assert_error(api.call(method, path), status, "invalid_request", path)


def test_backend_unavailable_while_triton_is_down(api, triton):
    api.post(LOAD, json={"model_dir": "alpha"})
    triton.stop()
    try:
        assert_error(
            api.post(PREDICT, json={"model_id": "alpha", "texts": ["x"]}), 503, "backend_unavailable", "unreachable"
        )
        assert_error(api.post(LOAD, json={"model_dir": "gamma"}), 503, "backend_unavailable")
        assert_error(api.get("/inference/models"), 503, "backend_unavailable")
        assert_error(api.get("/health/ready"), 503, "backend_unavailable")
        status = api.get("/inference/status")
        assert status.status_code == 200 and status.json()["service_status"] == "error"
        assert api.get("/health/live").status_code == 200
    finally:
        triton.start()
    # back without any client action: the manifest restored alpha
    body = api.post(PREDICT, json={"model_id": "alpha", "texts": ["x"]})
    assert body.status_code == 200, body.text
