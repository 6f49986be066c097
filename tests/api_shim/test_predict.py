"""POST /predict: shapes, values equal to the reference within 1e-4, top_n and batch_size semantics."""

from __future__ import annotations

import random

import pytest

from testkit.factories import random_text
from testkit.tolerance import assert_same_predictions, assert_same_ranking
from testkit.triton_tests_helpers import TOLERANCE, expected_rows

TEXTS = ["baba dede kiki", "类别 好坏 新闻", "lolo mumu nana popo", "", "kaka " * 80]


def test_predict_answers_the_contract_shape_with_reference_values(api, reference, triton_models_root):
    api.post("/inference/models/load", json={"model_dir": "team/beta"})
    response = api.post("/inference/predict", json={"model_id": "team/beta", "texts": TEXTS, "top_n": 2})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["model_id", "labels", "top_n", "label_probabilities"]
    assert body["model_id"] == "team/beta"
    expected = expected_rows(reference, triton_models_root, "team/beta", TEXTS)
    for i, want in enumerate(expected):
        distribution = body["label_probabilities"][i]
        assert list(distribution) == list(want)  # every label, in the label map's order
        assert max(abs(distribution[k] - want[k]) for k in want) <= TOLERANCE
        assert abs(sum(distribution.values()) - 1) < 1e-5
        ranked = sorted(want.items(), key=lambda kv: -kv[1])
        assert_same_ranking(body["top_n"][i], [[label, p] for label, p in ranked[:2]], want)  # up to near-ties
        assert body["labels"][i] == body["top_n"][i][0][0]
    assert "类别".encode() in response.content


def test_top_n_beyond_the_label_count_returns_every_label(api):
    api.post("/inference/models/load", json={"model_dir": "gamma"})  # 2 labels
    body = api.post("/inference/predict", json={"model_id": "gamma", "texts": ["baba"], "top_n": 50}).json()
    assert len(body["top_n"][0]) == 2
    assert body["top_n"][0][0][1] >= body["top_n"][0][1][1]


def test_top_n_defaults_to_three(api):
    api.post("/inference/models/load", json={"model_dir": "team/beta"})  # 5 labels
    body = api.post("/inference/predict", json={"model_id": "team/beta", "texts": ["baba", "dede"]}).json()
    assert [len(t) for t in body["top_n"]] == [3, 3]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batch_size_does_not_change_results(api, batch_size):
    api.post("/inference/models/load", json={"model_dir": "alpha"})
    rng = random.Random(4)
    texts = [random_text(rng, rng.randint(1, 20)) for _ in range(23)]
    reference_body = api.post("/inference/predict", json={"model_id": "alpha", "texts": texts, "batch_size": 16}).json()
    body = api.post("/inference/predict", json={"model_id": "alpha", "texts": texts, "batch_size": batch_size}).json()
    assert_same_predictions(body, reference_body)


def test_results_stay_in_order_across_many_chunks(api, reference, triton_models_root):
    api.post("/inference/models/load", json={"model_dir": "alpha"})
    rng = random.Random(9)
    texts = [random_text(rng, rng.randint(1, 12)) for _ in range(40)]
    body = api.post("/inference/predict", json={"model_id": "alpha", "texts": texts, "batch_size": 3}).json()
    for got, want in zip(body["label_probabilities"], expected_rows(reference, triton_models_root, "alpha", texts)):
        assert max(abs(got[k] - want[k]) for k in want) <= TOLERANCE
