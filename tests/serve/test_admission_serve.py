"""Admission through `make serve`'s stack (2 gunicorn workers, 2 Triton instances): traffic that the service
serves in time is never refused, after a quiet start and again once a flood has drained.

Every crowd here holds at most as many texts in flight as Triton runs at once (its 2 instances x
max_batch_size 64), so none of its predicts has a queue ahead of it: a correct admission refuses none of them,
whatever the machine's speed. The budget is 0.2 s, so that a speed model learned from the quiet start's lone
requests (what admission was before) would think these crowds slow and refuse them.
"""

from __future__ import annotations

import re

import pytest
import requests

from bench.loadgen import LoadResult, run_load
from lora_core.metric_names import NV_INFERENCE_PENDING_REQUEST_COUNT
from testkit.conditions import wait_for
from testkit.make_harness import Serve
from testkit.texts import make_texts

MODELS = ["alpha", "team/beta", "gamma"]
TEXTS = make_texts(256, 12, seed=5, vary=True)
LONG = make_texts(1, 600, seed=6)[0]  # past every max_length: 512 tokens once truncated
BUDGET_S = "0.2"


@pytest.fixture(scope="module")
def serve(tmp_path_factory, base_dir, triton_models_root):
    run = Serve(
        tmp_path_factory.mktemp("serve-admission"),
        BASE_MODEL_DIR=str(base_dir),
        MODELS_ROOT=str(triton_models_root),
        GUNICORN_WORKERS="2",
        ADMISSION_MAX_WAIT_S=BUDGET_S,
    )
    with run.serving(MODELS):
        yield run


def drive(serve: Serve, clients: int, texts: int, seconds: float = 2.0, **options) -> LoadResult:
    return run_load(f"{serve.base}/inference/predict", MODELS, TEXTS, texts, clients, seconds, warmup=0.3, **options)


def mixed_eight(client: int, k: int) -> list[str]:
    """Eight texts of mixed length, one of them long."""
    first = (client * 11 + k * 8) % len(TEXTS)
    return [LONG, *(TEXTS[(first + i) % len(TEXTS)] for i in range(7))]


# (clients, texts per request, options): each fits in the batches Triton runs at once (128 texts).
CROWDS = {
    "8 x 16": (8, 16, {"batch_size": 16}),
    "12 x 8 mixed lengths, batch_size 3": (12, 8, {"batch_size": 3, "texts_of": mixed_eight}),
    "4 x 32": (4, 32, {}),
    "16 x 1": (16, 1, {}),
    "32 x 1": (32, 1, {}),
}


def assert_every_crowd_served(serve: Serve) -> None:
    for name, (clients, texts, options) in CROWDS.items():
        run = drive(serve, clients, texts, **options)
        assert run.statuses.get(200, 0) > 0, (name, run.statuses)
        assert dict(run.statuses) == {200: run.statuses[200]}, (name, run.statuses)
        assert run.malformed == 0, name


def pending_in_triton(serve: Serve) -> float:
    metrics = requests.get(f"http://127.0.0.1:{serve.env['TRITON_METRICS_PORT']}/metrics", timeout=10).text
    found = re.search(rf'^{NV_INFERENCE_PENDING_REQUEST_COUNT}\{{model="lora_classifier".*\}} (\S+)$', metrics, re.M)
    assert found, "Triton's pending count is missing from its metrics"
    return float(found.group(1))


def test_after_a_quiet_start_no_crowd_that_fits_is_refused(serve):
    quiet = drive(serve, 4, 1, seconds=2.0)
    assert dict(quiet.statuses) == {200: quiet.statuses[200]}
    assert_every_crowd_served(serve)


def test_once_a_flood_has_drained_no_crowd_that_fits_is_refused(serve):
    flood = drive(serve, 96, 16, seconds=3.0)  # 1,536 texts: a queue, and refusals where it is too long
    assert set(flood.statuses) <= {200, 429}, flood.statuses
    assert flood.statuses.get(200, 0) > 0
    wait_for(lambda: pending_in_triton(serve) == 0, 60, "Triton's queue drained")
    assert_every_crowd_served(serve)
