"""Adding, replacing and removing adapters: idempotent, atomic, and leak-free."""

from __future__ import annotations

import gc
import shutil
import threading

import numpy as np
import psutil
import pytest

from lora_core.errors import InvalidRequest, ModelNotLoaded
from testkit.factories import OutputSpec, make_training_output

TEXTS = ["baba dede", "kaka lili mumu", "类别 好坏", ""]


def test_loading_twice_changes_nothing(engine, models_root, base_dir):
    make_training_output(models_root, "job", base_dir, OutputSpec())
    first = engine.load("job", max_length=32)
    second = engine.load("job", max_length=64)
    assert first.changed and not second.changed
    assert second.adapter is first.adapter and second.adapter.max_length == 32
    assert "already loaded" in second.message
    assert len(engine.resident()) == 1


def test_reload_replaces_the_adapter_with_what_is_on_disk_now(engine, reference, models_root, base_dir):
    out = make_training_output(models_root, "job", base_dir, OutputSpec(seed=1))
    engine.load("job")
    old = engine.classify(TEXTS, ["job"] * len(TEXTS))
    make_training_output(models_root, "job", base_dir, OutputSpec(seed=2))  # retrained in place
    assert not engine.load("job").changed  # no reload asked: the resident version stays
    result = engine.load("job", max_length=16, reload=True)
    assert result.changed and result.adapter.max_length == 16
    new = engine.classify(TEXTS, ["job"] * len(TEXTS))
    expected = reference.probabilities(out, TEXTS, 16)
    for before, after, want in zip(old, new, expected):
        np.testing.assert_allclose(after.probabilities, want, atol=1e-4, rtol=0)
        assert not np.allclose(before.probabilities, after.probabilities, atol=1e-3)


def test_mixed_batches_see_a_reload_of_an_adapter_in_their_set(engine, reference, models_root, base_dir):
    """Mixed batches reuse stacked weights per adapter set; a reload must never be served from the old stack."""
    make_training_output(models_root, "other", base_dir, OutputSpec(seed=3))
    out = make_training_output(models_root, "job", base_dir, OutputSpec(seed=1))
    engine.load("other")
    engine.load("job")
    ids = ["job", "other"] * 2
    engine.classify(TEXTS, ids)  # the set {job, other} is now stacked and cached
    make_training_output(models_root, "job", base_dir, OutputSpec(seed=2))
    engine.load("job", reload=True)
    results = engine.classify(TEXTS, ids)
    expected = reference.probabilities(out, TEXTS, 512)
    for row in (0, 2):
        np.testing.assert_allclose(results[row].probabilities, expected[row], atol=1e-4, rtol=0)


def test_reload_is_atomic_under_concurrent_classification(engine, reference, models_root, base_dir):
    """Every result comes wholly from version 1 or wholly from version 2, never a mix of the two."""
    versions = []
    for seed in (1, 2):
        staged = make_training_output(models_root.parent / "staging", f"v{seed}", base_dir, OutputSpec(seed=seed))
        versions.append((staged, reference.probabilities(staged, TEXTS)))
    shutil.copytree(versions[0][0], models_root / "job")
    engine.load("job")

    stop, failures, seen = threading.Event(), [], set()

    def classify_forever() -> None:
        while not stop.is_set():
            for i, result in enumerate(engine.classify(TEXTS, ["job"] * len(TEXTS))):
                match = [
                    v for v, (_, probs) in enumerate(versions) if np.allclose(result.probabilities, probs[i], atol=1e-4)
                ]
                if len(match) != 1:
                    failures.append(result.probabilities)
                seen.update(match)

    workers = [threading.Thread(target=classify_forever) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for cycle in range(30):
            staged, _ = versions[(cycle + 1) % 2]
            shutil.rmtree(models_root / "job")
            shutil.copytree(staged, models_root / "job")
            engine.load("job", reload=True)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not failures
    assert seen == {0, 1}


def test_remove_then_classify_fails_with_model_not_loaded(engine, models_root, base_dir):
    make_training_output(models_root, "job", base_dir, OutputSpec())
    make_training_output(models_root, "other", base_dir, OutputSpec(seed=5))
    engine.load("job")
    engine.load("other")
    engine.remove("job")
    with pytest.raises(ModelNotLoaded, match="job is not loaded") as caught:
        engine.classify(TEXTS, ["other", "job", "other", "other"])
    assert caught.value.code == "model_not_loaded"
    assert len(engine.classify(TEXTS, ["other"] * 4)) == 4
    with pytest.raises(ModelNotLoaded):
        engine.remove("job")


def test_classify_validates_its_inputs(engine, models_root, base_dir):
    make_training_output(models_root, "job", base_dir, OutputSpec())
    engine.load("job")
    assert engine.classify([], []) == []
    with pytest.raises(InvalidRequest):
        engine.classify(["a", "b"], ["job"])
    with pytest.raises(ModelNotLoaded, match="never"):
        engine.classify(["a"], ["never"])


def test_200_add_remove_cycles_leave_resident_memory_flat(base_dir, models_root):
    """A leak of one adapter per cycle would show: the bound is a tenth of 200 leaked adapters."""
    from adapter_manager import AdapterEngine

    engine = AdapterEngine(base_dir, models_root, device="cpu")
    spec = OutputSpec(rank=64, target_modules=("query", "key", "value", "dense"), num_labels=50)
    make_training_output(models_root, "big", base_dir, spec)
    make_training_output(models_root, "small", base_dir, OutputSpec(seed=9))
    engine.load("small")
    adapter_bytes = engine.load("big").adapter.nbytes
    engine.remove("big")
    process = psutil.Process()

    def cycle() -> None:
        engine.load("big")
        engine.classify(TEXTS, ["big", "small", "big", "small"])
        engine.remove("big")

    for _ in range(20):  # warm up allocator pools and caches
        cycle()
    gc.collect()
    before = process.memory_info().rss
    for _ in range(200):
        cycle()
    gc.collect()
    grown = process.memory_info().rss - before
    assert grown < 20 * adapter_bytes, (
        f"RSS grew {grown / 1e6:.2f} MB over 200 cycles of a {adapter_bytes / 1e6:.2f} MB adapter"
    )
    assert [a.model_id for a in engine.resident()] == ["small"]
