"""With 2 instances: a model loaded once is served by both; unloaded once, it is gone from both."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from lora_core.errors import AdapterError
from lora_core.metric_names import LORA_FAILURES_TOTAL, LORA_TEXTS_TOTAL
from testkit.conditions import settled, wait_for
from testkit.factories import random_text
from testkit.triton_harness import LoraClient
from testkit.triton_tests_helpers import assert_rows_close, expected_rows

INSTANCES = ("lora_classifier_0_0", "lora_classifier_0_1")


def predict_from_a_fresh_client(url: str, texts, ids):
    client = LoraClient(url)  # tritonclient is not thread safe: one client per thread
    try:
        return client.predict(texts, ids)
    except AdapterError as exc:
        return exc
    finally:
        client.close()


def texts_served(triton, model_id: str) -> dict[str, float]:
    return {i: triton.metric(LORA_TEXTS_TOTAL, model_id=model_id, instance=i) for i in INSTANCES}


def test_loaded_once_served_by_every_instance_then_unloaded_everywhere(triton, client, reference, triton_models_root):
    assert client.control({"op": "load", "model_dir": "alpha"})["changed"]
    rng = random.Random(5)
    batches = [[random_text(rng, rng.randint(1, 20)) for _ in range(4)] for _ in range(40)]
    before = settled(lambda: texts_served(triton, "alpha"), 1.5, 30, "alpha's counts from earlier tests")

    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda texts: predict_from_a_fresh_client(triton.url, texts, ["alpha"] * 4), batches))

    for texts, rows in zip(batches, results):
        assert not isinstance(rows, AdapterError), rows
        for got, want in zip(rows, expected_rows(reference, triton_models_root, "alpha", texts)):
            assert_rows_close(got, want)
    # the counts reach Triton's metrics within the model's METRICS_FLUSH_S
    wait_for(lambda: sum(texts_served(triton, "alpha").values()) - sum(before.values()) >= 160, 10, "160 texts counted")
    after = texts_served(triton, "alpha")
    served = {i: after[i] - before[i] for i in INSTANCES}
    assert sum(served.values()) == 160
    assert all(count > 0 for count in served.values()), f"an instance served nothing: {served}"

    client.control({"op": "unload", "model_id": "alpha"})
    failures_before = settled(
        lambda: {i: triton.metric(LORA_FAILURES_TOTAL, instance=i) for i in INSTANCES}, 1.5, 30, "failure counts"
    )
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda texts: predict_from_a_fresh_client(triton.url, texts, ["alpha"] * 4), batches))
    assert all(isinstance(r, AdapterError) and r.code == "model_not_loaded" for r in results)

    def failed() -> dict[str, float]:
        return {i: triton.metric(LORA_FAILURES_TOTAL, instance=i) - failures_before[i] for i in INSTANCES}

    wait_for(lambda: sum(failed().values()) >= len(batches), 10, "every failure counted")
    assert all(count > 0 for count in failed().values()), f"an instance never saw the unload: {failed()}"
