"""2 gunicorn workers, 2 Triton instances, 20 concurrent clients mixing 3 models: every answer correct."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import requests

from testkit.factories import random_text
from testkit.triton_tests_helpers import TOLERANCE, expected_rows

MODELS = ("alpha", "team/beta", "gamma")


def test_twenty_concurrent_clients_mixing_three_models(api, shim, reference, triton_models_root):
    for model_id in MODELS:
        api.post("/inference/models/load", json={"model_dir": model_id})
    rng = random.Random(21)
    jobs = []
    for client in range(20):
        for request in range(3):
            texts = [random_text(rng, rng.randint(1, 15)) for _ in range(rng.randint(1, 6))]
            jobs.append((MODELS[(client + request) % 3], texts, rng.choice([1, 2, 16])))

    def send(job):
        model_id, texts, batch_size = job
        with requests.Session() as session:
            response = session.post(
                f"{shim.base}/inference/predict",
                json={"model_id": model_id, "texts": texts, "batch_size": batch_size, "top_n": 10},
                timeout=120,
            )
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, jobs))

    for (model_id, texts, _), (status, body) in zip(jobs, answers):
        assert status == 200, body
        assert body["model_id"] == model_id and len(body["labels"]) == len(texts)
        for got, want in zip(
            body["label_probabilities"], expected_rows(reference, triton_models_root, model_id, texts)
        ):
            assert list(got) == list(want)  # a mix-up of models would show here: label sets differ
            assert max(abs(got[k] - want[k]) for k in want) <= TOLERANCE


def test_concurrent_predicts_share_triton_requests_and_a_missing_model_fails_only_its_own(
    api, shim, triton, reference, triton_models_root
):
    """The shim joins concurrent predicts into shared Triton requests (api_shim/coalescer.py); one that names a
    model not loaded gets its 404 alone, while those beside it in the same request get their results."""
    for model_id in MODELS:
        api.post("/inference/models/load", json={"model_dir": model_id})
    api.post("/inference/models/unload", json={"model_id": "bench-0"})
    rng = random.Random(5)
    jobs = [("bench-0" if i % 7 == 3 else MODELS[i % 3], [random_text(rng, rng.randint(1, 12))]) for i in range(160)]

    def send(job):
        model_id, texts = job
        with requests.Session() as session:
            response = session.post(
                f"{shim.base}/inference/predict", json={"model_id": model_id, "texts": texts, "top_n": 10}, timeout=120
            )
        return response.status_code, response.json()

    before = triton.statistics()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, jobs))
    after = triton.statistics()

    for (model_id, texts), (status, body) in zip(jobs, answers):
        if model_id == "bench-0":
            assert (status, body["error"]) == (404, "model_not_loaded"), body
            assert "bench-0" in body["message"]
            continue
        assert status == 200, body
        [got] = body["label_probabilities"]
        [want] = expected_rows(reference, triton_models_root, model_id, texts)
        assert list(got) == list(want) and max(abs(got[k] - want[k]) for k in want) <= TOLERANCE
    assert after["requests"] - before["requests"] < len(jobs), "no predicts shared a Triton request"
