"""Load through CONTROL, then predict: results equal the reference computation within 1e-4."""

from __future__ import annotations

import random

import pytest

from testkit.factories import random_text
from testkit.triton_tests_helpers import assert_rows_close, expected_rows
from testkit.triton_harness import expect_error

TEXTS = ["baba dede kiki", "类别 好坏 新闻", "", "lolo " * 200]


def test_load_then_predict_matches_the_reference(client, reference, triton_models_root):
    answer = client.control({"op": "load", "model_dir": "alpha"})
    assert answer["status"] == "loaded" and answer["changed"] and answer["model_id"] == "alpha"
    assert answer["labels"] == ["类别A", "类别B", "类别C"]
    rows = client.predict(TEXTS, ["alpha"] * len(TEXTS))
    for got, want in zip(rows, expected_rows(reference, triton_models_root, "alpha", TEXTS)):
        assert_rows_close(got, want)


def test_one_request_may_mix_models_with_different_label_counts(client, reference, triton_models_root):
    client.control({"op": "load", "model_dir": "alpha"})
    client.control({"op": "load", "model_dir": "team/beta", "max_length": 16})
    client.control({"op": "load", "model_dir": "gamma"})
    rng = random.Random(3)
    texts = [random_text(rng, rng.randint(1, 30)) for _ in range(12)]
    ids = [rng.choice(["alpha", "team/beta", "gamma"]) for _ in texts]
    rows = client.predict(texts, ids)
    for model_id in set(ids):
        picked = [i for i, m in enumerate(ids) if m == model_id]
        max_length = 16 if model_id == "team/beta" else 512
        want = expected_rows(reference, triton_models_root, model_id, [texts[i] for i in picked], max_length)
        for i, expected in zip(picked, want):
            assert_rows_close(rows[i], expected)


def test_load_is_idempotent_and_reload_replaces(client):
    first = client.control({"op": "load", "model_dir": "alpha", "max_length": 64})
    again = client.control({"op": "load", "model_dir": "alpha", "max_length": 32})
    assert first["changed"] and not again["changed"] and again["status"] == "loaded"
    assert "already loaded" in again["message"] and again["max_length"] == 64
    reloaded = client.control({"op": "load", "model_dir": "alpha", "max_length": 32, "reload": True})
    assert reloaded["changed"] and reloaded["max_length"] == 32


def test_list_shows_loaded_models_and_every_valid_training_output(client):
    client.control({"op": "load", "model_dir": "team/beta"})
    listing = {m["model_id"]: m for m in client.control({"op": "list"})["models"]}
    assert listing["team/beta"]["status"] == "loaded"
    assert listing["team/beta"]["device"] == "cpu" and listing["team/beta"]["loaded_at"] > 0
    assert listing["alpha"]["status"] == "unloaded" and listing["alpha"]["loaded_at"] is None
    assert "broken" in listing  # laid out like a training output; its contents are checked on load
    assert {f"bench-{i}" for i in range(8)} <= set(listing)


def test_status_describes_the_instance(client):
    client.control({"op": "load", "model_dir": "gamma"})
    status = client.control({"op": "status"})
    assert status["device"] == "cpu" and status["kind"] == "cpu" and status["gpu_uuid"] is None
    assert status["instance"].startswith("lora_classifier_")
    assert status["resident"] == ["gamma"] and status["problems"] == {}
    assert status["loaded_models"] == 1


def test_the_spelling_that_loads_a_model_also_predicts_with_it_and_unloads_it(client):
    answer = client.control({"op": "load", "model_dir": "team/beta/"})
    assert answer["model_id"] == "team/beta"
    spellings = ["team/beta/", "./team/beta", "team//beta", "team/beta"]
    rows = client.predict(["baba dede"] * len(spellings), spellings)
    for row in rows:  # one model for every spelling
        assert_rows_close(row, rows[0])
    assert client.control({"op": "unload", "model_id": "team//beta/"})["model_id"] == "team/beta"
    expect_error("model_not_loaded", client.predict, ["baba"], ["team/beta/"])


def test_unload_then_predict_is_model_not_loaded(client):
    client.control({"op": "load", "model_dir": "alpha"})
    assert client.control({"op": "unload", "model_id": "alpha"})["status"] == "unloaded"
    expect_error("model_not_loaded", client.predict, ["x"], ["alpha"])
    expect_error("model_not_loaded", client.control, {"op": "unload", "model_id": "alpha"})


def test_text_without_model_id_is_an_invalid_request(client):
    import numpy as np
    import tritonclient.http as triton_http

    from lora_core.errors import from_wire

    tensor = triton_http.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"hello"]], dtype=object))
    with pytest.raises(Exception) as caught:
        client.client.infer("lora_classifier", [tensor])
    error = from_wire(str(caught.value))
    assert error is not None and error.code == "invalid_request", str(caught.value)
