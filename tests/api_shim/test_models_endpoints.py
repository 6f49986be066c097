"""POST /models/load, /models/unload, GET /models, POST /models/query: shapes field by field."""

from __future__ import annotations

import pytest

from testkit.conditions import wait_for


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


# ------------------------------------------------ filters beyond the contract: status, limit, offset


def _while_the_listing_holds_still(api, observe, ids_seen):
    """`observe(full_ids)` run between two equal full listings, and seeing the same set of ids as they do
    (`ids_seen(observed)`): another test's outputs, made or removed just before, reach each Triton instance's
    index within a second, and two instances may answer one listing each while only one has caught up."""

    def attempt():
        before = [m["model_id"] for m in api.get("/inference/models").json()["models"]]
        seen = observe(before)
        after = [m["model_id"] for m in api.get("/inference/models").json()["models"]]
        return (before, seen) if before == after and sorted(ids_seen(seen)) == sorted(before) else None

    return wait_for(attempt, 30, "the listing holding still")


def _ids(*listings) -> list[str]:
    return [m["model_id"] for listing in listings for m in listing["models"]]


def test_the_status_filter_keeps_one_kind_and_counts_only_its_matches(api):
    api.post("/inference/models/load", json={"model_dir": "alpha"})

    def observe(_):
        return [api.get("/inference/models", params={"status": s}).json() for s in ("loaded", "unloaded")]

    everything, (loaded, unloaded) = _while_the_listing_holds_still(api, observe, lambda seen: _ids(*seen))
    assert [m["model_id"] for m in loaded["models"]] == ["alpha"]
    assert loaded["total"] == 1 and loaded["loaded_count"] == 1
    assert {m["status"] for m in unloaded["models"]} == {"unloaded"} and unloaded["loaded_count"] == 0
    assert [m["model_id"] for m in loaded["models"] + unloaded["models"]] == everything
    assert unloaded["total"] == len(everything) - 1 == len(unloaded["models"])


def test_pages_cover_the_listing_in_order_and_count_every_match(api):
    api.post("/inference/models/load", json={"model_dir": "gamma"})

    def observe(everything):
        pages = [
            api.get("/inference/models", params={"limit": "2", "offset": str(offset)}).json()
            for offset in range(0, len(everything) + 2, 2)
        ]
        empty = api.get("/inference/models", params={"limit": "0"}).json()
        tail = api.get("/inference/models", params={"offset": "1"}).json()
        return pages, empty, tail

    def ids_seen(seen) -> list[str]:  # every page, the empty page's total and the tail from one snapshot
        pages, empty, tail = seen
        ids = _ids(*pages)
        return ids if empty["total"] == len(ids) and _ids(tail) == ids[1:] else []

    everything, (pages, empty, tail) = _while_the_listing_holds_still(api, observe, ids_seen)
    assert len(everything) >= 3 and everything[0] == "gamma"  # loaded first
    assert all(page["total"] == len(everything) and page["loaded_count"] == 1 for page in pages)
    assert [m["model_id"] for page in pages for m in page["models"]] == everything
    assert empty["models"] == [] and empty["total"] == len(everything)
    assert [m["model_id"] for m in tail["models"]] == everything[1:]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"status": "busy"}, "status must be one of loaded, unloaded"),
        ({"status": ""}, "status must be one of"),
        ({"limit": "-1"}, "limit must be an integer from 0"),
        ({"limit": "abc"}, "limit must be an integer"),
        ({"limit": "1.5"}, "limit must be an integer"),
        ({"limit": "+1"}, "limit must be an integer"),
        ({"limit": "٣"}, "limit must be an integer"),  # an Arabic-Indic digit: not ASCII
        ({"limit": "1" * 10}, "limit must be an integer from 0 to 999999999"),
        ({"offset": " 1"}, "offset must be an integer"),
        ({"limit": ["1", "2"]}, "limit is given 2 times"),
    ],
)
def test_invalid_filters_are_invalid_requests(api, params, message):
    response = api.get("/inference/models", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request" and message in response.json()["message"]


def test_query_leaves_out_spellings_that_name_nothing(api):
    body = api.post("/inference/models/query", json={"model_ids": ["../alpha", "alpha", "/alpha", "al\u0000pha"]})
    assert body.status_code == 200, body.text
    assert [m["model_id"] for m in body.json()["models"]] == ["alpha"]
