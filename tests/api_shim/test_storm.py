"""A storm of load / reload / unload / predict through the real shim (2 gunicorn workers, 2 Triton instances).

Six models with their own label names and known probabilities. Phase 1 lets 20 clients race on the same
ids; phase 2 serializes operations per id (a lock per id in the test, ids still concurrent with each other)
so every answer is definite. Every 200 predict must carry its own model's labels and probabilities
(within 1e-4), every other answer must be a contract error, never a 500, and the final listing must agree
with the last acknowledged operation on each id. The counts are printed for docs/reliability.md.
"""

from __future__ import annotations

import collections
import random
import shutil
import threading
import time
import uuid

import pytest

from testkit.factories import OutputSpec, make_training_output
from testkit.triton_tests_helpers import TOLERANCE

CLIENTS = 20
PHASE_SECONDS = (15.0, 15.0)
TEXTS = ["baba dede fifi", "类别 好坏", "kaka lili mumu nunu", ""]
LOAD, UNLOAD, PREDICT, MODELS = (
    "/inference/models/load",
    "/inference/models/unload",
    "/inference/predict",
    "/inference/models",
)


@pytest.fixture
def storm_models(triton_models_root, base_dir, reference):
    """model_id -> {label: probability} per text, for six new models with distinct label names."""
    prefix = f"storm-{uuid.uuid4().hex[:6]}"
    expected = {}
    for i in range(6):
        model_id = f"{prefix}/m{i}"
        labels = [f"m{i}-{name}" for name in ("ant", "bee", "cat", "dog", "eel", "fox")[: 2 + i % 4]]
        spec = OutputSpec(
            stem=f"m{i}",
            seed=60 + i,
            num_labels=len(labels),
            label_names=labels,
            rank=2 + 2 * (i % 3),
            head_layout="two-layer" if i % 2 else "linear",
            pooling="mean" if i % 3 == 0 else None,
        )
        out = make_training_output(triton_models_root, model_id, base_dir, spec)
        expected[model_id] = [dict(zip(labels, p)) for p in reference.probabilities(out, TEXTS)]
    yield expected
    shutil.rmtree(triton_models_root / prefix)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[str] = []

    def count(self, key: tuple) -> None:
        with self.lock:
            self.counts[key] += 1

    def fail(self, message: str) -> None:
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(message)


ALLOWED = {  # op -> status -> error code (None: success)
    "load": {200: None},
    "reload": {200: None},
    "unload": {200: None, 404: "model_not_loaded"},
    "predict": {200: None, 404: "model_not_loaded"},
}


def run_op(client, op: str, model_id: str, expected, tally: Tally, phase: str) -> int | None:
    """One operation; checks the answer against the contract and returns its HTTP status (None on failure)."""
    try:
        if op == "predict":
            response = client.post(PREDICT, json={"model_id": model_id, "texts": TEXTS, "top_n": 6})
        elif op == "unload":
            response = client.post(UNLOAD, json={"model_id": model_id})
        else:
            response = client.post(LOAD, json={"model_dir": model_id, "reload": op == "reload"})
        body = response.json()
    except AssertionError as exc:  # the response does not match openapi.yaml
        tally.fail(f"{phase} {op} {model_id}: {exc}")
        return None
    except Exception as exc:
        tally.fail(f"{phase} {op} {model_id}: {type(exc).__name__}: {exc}")
        return None
    status = response.status_code
    tally.count((phase, op, status, body.get("error", "ok")))
    allowed = ALLOWED[op]
    if status not in allowed or (allowed[status] is not None and body.get("error") != allowed[status]):
        tally.fail(f"{phase} {op} {model_id}: {status} {body}")
        return None
    if status == 200 and op == "predict":
        if body["model_id"] != model_id:
            tally.count((phase, "mix-up"))
            tally.fail(f"{phase} predict {model_id} answered for {body['model_id']}")
            return None
        for got, want in zip(body["label_probabilities"], expected[model_id]):
            if list(got) != list(want) or max(abs(got[k] - want[k]) for k in want) > TOLERANCE:
                tally.count((phase, "mix-up"))
                tally.fail(f"{phase} predict {model_id}: {got} != {want}")
                return None
        if len(body["label_probabilities"]) != len(TEXTS):
            tally.fail(f"{phase} predict {model_id}: {len(body['label_probabilities'])} rows")
            return None
    elif status == 200 and body.get("model_id") != model_id:
        tally.fail(f"{phase} {op} {model_id}: answered {body}")
        return None
    return status


OPS = ["predict"] * 6 + ["load"] * 2 + ["reload"] + ["unload"] * 2


def test_storm_of_loads_reloads_unloads_and_predicts(api, storm_models):
    client_class = type(api)  # each thread its own session; every answer validated against openapi.yaml
    ids = sorted(storm_models)
    tally = Tally()

    # ---- phase 1: free for all, the same ids raced from every thread
    deadline = time.monotonic() + PHASE_SECONDS[0]

    def chaos(seed: int) -> None:
        rng, client = random.Random(seed), client_class(api.base)
        while time.monotonic() < deadline:
            run_op(
                client, rng.choice(OPS), rng.choice(ids[:3] if rng.random() < 0.7 else ids), storm_models, tally, "race"
            )

    threads = [threading.Thread(target=chaos, args=(seed,)) for seed in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # ---- phase 2: one operation at a time per id, so each answer is known in advance
    state = {m: m in api.loaded() for m in ids}  # nothing is in flight: this is the state the storm left
    locks = {m: threading.Lock() for m in ids}
    deadline = time.monotonic() + PHASE_SECONDS[1]

    def serialized(seed: int) -> None:
        rng, client = random.Random(1000 + seed), client_class(api.base)
        while time.monotonic() < deadline:
            op, model_id = rng.choice(OPS), rng.choice(ids)
            with locks[model_id]:
                status = run_op(client, op, model_id, storm_models, tally, "serial")
                if status is None:
                    continue
                want = 200 if state[model_id] or op in ("load", "reload") else 404
                if status != want:  # a loaded model must answer 200; an unloaded one model_not_loaded
                    tally.fail(f"serial {op} {model_id}: {status}, expected {want} (loaded={state[model_id]})")
                if op in ("load", "reload"):
                    state[model_id] = True
                elif op == "unload":
                    state[model_id] = False

    threads = [threading.Thread(target=serialized, args=(seed,)) for seed in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    listing = {m["model_id"]: m["status"] for m in api.get(MODELS).json()["models"]}
    final = {m: listing.get(m) == "loaded" for m in ids}

    summary = collections.Counter()
    for key, n in sorted(tally.counts.items(), key=str):
        summary[key] = n
    print(f"\nstorm: {CLIENTS} clients, {len(ids)} models, phases {PHASE_SECONDS} s")
    for key, n in sorted(summary.items(), key=str):
        print("  ", " ".join(map(str, key)), n)
    print("   final state agrees:", final == state)

    assert not tally.failures, "\n".join(tally.failures)
    assert final == state, f"listing {final} but last acknowledged {state}"
    assert not any(k[1] == "mix-up" for k in tally.counts)
    assert all(k[2] != 500 for k in tally.counts if len(k) > 2)
    for phase in ("race", "serial"):
        for op in ("predict", "load", "reload", "unload"):
            assert tally.counts[(phase, op, 200, "ok")] > 0, f"{phase}: no successful {op}"
