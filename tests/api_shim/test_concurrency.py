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
