"""Every control error reaches the client with the contract's code."""

from __future__ import annotations

import pytest

from conftest import MAX_ADAPTERS
from testkit.tolerance import assert_same_rows
from testkit.triton_harness import expect_error


@pytest.mark.parametrize(
    "document, code, words",
    [
        ({"op": "load", "model_dir": "missing"}, "model_not_found", "does not exist"),
        ({"op": "load", "model_dir": "broken"}, "invalid_model", "broken/model.head.pt.pkl"),
        ({"op": "load", "model_dir": "../etc"}, "invalid_request", "'..'"),
        ({"op": "load", "model_dir": "/etc"}, "invalid_request", "relative"),
        ({"op": "load", "model_dir": 7}, "invalid_request", "string"),
        ({"op": "load", "model_dir": "alpha", "max_length": 100000}, "invalid_request", "max_length"),
        ({"op": "load", "model_dir": "alpha", "reload": "yes"}, "invalid_request", "reload"),
        ({"op": "unload", "model_id": "never-loaded"}, "model_not_loaded", "never-loaded"),
        ({"op": "unload"}, "invalid_request", "model_id"),
        ({"op": "explode"}, "invalid_request", "unknown control op"),
        ({"model_dir": "alpha"}, "invalid_request", "unknown control op"),
        (["load"], "invalid_request", "JSON object"),
    ],
)
def test_control_errors_carry_their_code(client, document, code, words):
    error = expect_error(code, client.control, document)
    assert words in error.message


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe"])
def test_control_that_is_not_json(client, raw):
    expect_error("invalid_request", client.control, None, raw=raw)


def test_capacity_is_enforced_across_the_service(client):
    candidates = ["alpha", "team/beta", "gamma"] + [f"bench-{i}" for i in range(8)]
    for model_id in candidates[:MAX_ADAPTERS]:
        client.control({"op": "load", "model_dir": model_id})
    error = expect_error("capacity_exceeded", client.control, {"op": "load", "model_dir": candidates[MAX_ADAPTERS]})
    assert f"the maximum is {MAX_ADAPTERS}" in error.message
    assert len(client.loaded()) == MAX_ADAPTERS
    client.control({"op": "unload", "model_id": candidates[0]})
    assert client.control({"op": "load", "model_dir": candidates[MAX_ADAPTERS]})["changed"]


def test_a_failed_load_leaves_loaded_models_serving(client):
    client.control({"op": "load", "model_dir": "alpha"})
    before = client.predict(["baba"], ["alpha"])
    expect_error("invalid_model", client.control, {"op": "load", "model_dir": "broken"})
    assert client.loaded() == ["alpha"]
    assert_same_rows(client.predict(["baba"], ["alpha"]), before)
