"""Concurrent requests for different models are batched into shared executions, each result correct."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from lora_core.errors import AdapterError
from testkit.factories import random_text
from triton_model.test_instances import predict_from_a_fresh_client
from testkit.triton_tests_helpers import assert_rows_close, expected_rows

MODELS = ("alpha", "team/beta", "gamma")


def test_requests_for_three_models_share_executions(triton, client, reference, triton_models_root):
    for model_id in MODELS:
        client.control({"op": "load", "model_dir": model_id})
    rng = random.Random(11)
    jobs = [([random_text(rng, rng.randint(1, 25))], [MODELS[i % 3]]) for i in range(90)]
    before = triton.statistics()
    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(lambda job: predict_from_a_fresh_client(triton.url, *job), jobs))
    after = triton.statistics()

    requests = after["requests"] - before["requests"]
    executions = after["executions"] - before["executions"]
    assert requests == len(jobs)
    assert executions < requests, f"no batching: {executions} executions for {requests} requests"

    for (texts, ids), rows in zip(jobs, results):
        assert not isinstance(rows, AdapterError), rows
        assert_rows_close(rows[0], expected_rows(reference, triton_models_root, ids[0], texts)[0])
