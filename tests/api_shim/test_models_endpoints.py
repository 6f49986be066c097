"""POST /models/load, /models/unload, GET /models, POST /models/query: shapes field by field."""

from __future__ import annotations

import pytest


def test_load_answers_the_contract_shape(api):
    response = api.post("/inference/models/load", json={"model_dir": "alpha", "max_length": 128})
    assert response.status_code == 200
    body = response.json()
    assert (body["model_id"], body["status"]) == ("alpha", "loaded")
    assert body["message"].startswith("model alpha loaded in ")
    assert body["labels"] == ["类别A", "类别B", "类别C"] and body["max_length"] == 128 and body["reloaded"] is False
    assert "类别A".encode() in response.content  # non-ASCII as is, not \u escapes


def test_load_is_idempotent_and_reload_is_explicit(api):
    api.post("/inference/models/load", json={"model_dir": "alpha"})
    again = api.post("/inference/models/load", json={"model_dir": "alpha"}).json()
    assert again["status"] == "loaded" and again["message"] == "model alpha is already loaded"
    reloaded = api.post("/inference/models/load", json={"model_dir": "alpha", "reload": True}).json()
    assert reloaded["status"] == "loaded" and reloaded["reloaded"] is True


def test_nested_model_dirs_are_model_ids(api):
    body = api.post("/inference/models/load", json={"model_dir": "team//beta/"}).json()
    assert body["model_id"] == "team/beta"


def test_the_spelling_that_loads_a_model_serves_every_endpoint(api):
    assert api.post("/inference/models/load", json={"model_dir": "./team/beta/"}).json()["model_id"] == "team/beta"
    for spelling in ("team/beta/", "./team/beta", "team//beta"):
        predicted = api.post("/inference/predict", json={"model_id": spelling, "texts": ["baba dede"]})
        assert predicted.status_code == 200, predicted.text
        queried = api.post("/inference/models/query", json={"model_ids": [spelling]}).json()
        assert [m["model_id"] for m in queried["models"]] == ["team/beta"]
    unloaded = api.post("/inference/models/unload", json={"model_id": "team/beta/"})
    assert unloaded.status_code == 200 and unloaded.json()["model_id"] == "team/beta"


def test_unload_answers_the_contract_shape(api):
    api.post("/inference/models/load", json={"model_dir": "gamma"})
    body = api.post("/inference/models/unload", json={"model_id": "gamma"}).json()
    assert body == {"model_id": "gamma", "status": "unloaded", "message": "model gamma unloaded"}
    assert "gamma" not in api.loaded()


def test_listing_shows_loaded_and_unloaded_models(api):
    api.post("/inference/models/load", json={"model_dir": "alpha"})
    body = api.get("/inference/models").json()
    by_id = {m["model_id"]: m for m in body["models"]}
    assert body["total"] == len(body["models"]) and body["loaded_count"] == 1
    alpha = by_id["alpha"]
    assert alpha["status"] == "loaded" and alpha["gpu_id"] is None and alpha["device"] == "cpu"
    assert 0 <= alpha["uptime_seconds"] < 60
    assert by_id["gamma"] == {
        "model_id": "gamma",
        "status": "unloaded",
        "gpu_id": None,
        "uptime_seconds": None,
        "device": None,
    }
    assert list(alpha)[:4] == ["model_id", "status", "gpu_id", "uptime_seconds"]


def test_query_returns_only_the_requested_models_that_exist(api):
    api.post("/inference/models/load", json={"model_dir": "alpha"})
    body = api.post("/inference/models/query", json={"model_ids": ["alpha", "gamma", "no-such-model"]}).json()
    assert [m["model_id"] for m in body["models"]] == ["alpha", "gamma"]
    assert body["total"] == 2 and body["loaded_count"] == 1


@pytest.mark.parametrize(
    "body, message",
    [
        ({"model_ids": []}, "model_ids must not be empty"),
        ({}, "model_ids is required"),
        ({"model_ids": "alpha"}, "must be a list"),
    ],
)
def test_query_needs_a_non_empty_list(api, body, message):
    response = api.post("/inference/models/query", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request" and message in response.json()["message"]
