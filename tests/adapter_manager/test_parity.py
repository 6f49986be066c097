"""The engine's probabilities equal the reference computation (plain transformers + peft, one model at a
time) within 1e-4, for batches that mix adapters in any order."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import PARITY_TOLERANCE
from testkit.factories import OutputSpec, make_training_output, random_text

# Different ranks, target modules, label counts, head layouts, pooling, weight and label formats.
ADAPTERS = {
    "alpha": (OutputSpec(rank=4, alpha=8, target_modules=("query", "value"), num_labels=3, seed=1), 512),
    "team/beta": (
        OutputSpec(
            stem="beta",
            rank=8,
            alpha=16,
            use_rslora=True,
            target_modules=("query", "key", "value", "dense"),
            weights_format="bin",
            num_labels=5,
            head_layout="two-layer",
            head_prefix="head.",
            pooling="mean",
            labels_format="index_to_label",
            seed=2,
        ),
        24,
    ),
    "gamma": (
        OutputSpec(
            stem="gamma",
            rank=2,
            alpha=4,
            target_modules=("key", "output.dense"),
            rank_pattern={"key": 6},
            num_labels=2,
            head_bias=False,
            head_prefix="",
            pooling="cls",
            labels_format="label_to_index",
            seed=3,
        ),
        8,
    ),
    "delta": (OutputSpec(stem="delta", rank=16, target_modules=("intermediate.dense",), num_labels=7, seed=4), 512),
}


@pytest.fixture
def loaded(engine, models_root, base_dir, reference):
    """Load every adapter; return texts and each adapter's reference probabilities for all of them."""
    rng = random.Random(7)
    texts = [random_text(rng, rng.randint(0, 40)) for _ in range(12)] + ["类别 好坏 新闻", "", "ba" * 300]
    expected = {}
    for model_id, (spec, max_length) in ADAPTERS.items():
        out = make_training_output(models_root, model_id, base_dir, spec)
        engine.load(model_id, max_length=max_length)
        expected[model_id] = reference.probabilities(out, texts, max_length)
    return texts, expected


def check(engine, texts, expected, pairs):
    """Classify the (text index, model id) pairs as one batch and compare each row with its reference."""
    results = engine.classify([texts[i] for i, _ in pairs], [m for _, m in pairs])
    for (i, model_id), result in zip(pairs, results):
        assert result.model_id == model_id
        np.testing.assert_allclose(result.probabilities, expected[model_id][i], atol=PARITY_TOLERANCE, rtol=0)


def test_each_adapter_alone(engine, loaded):
    texts, expected = loaded
    for model_id in ADAPTERS:
        check(engine, texts, expected, [(i, model_id) for i in range(len(texts))])


@pytest.mark.parametrize("seed", range(5))
def test_batches_mixing_adapters_in_any_order(engine, loaded, seed):
    texts, expected = loaded
    rng = random.Random(seed)
    pairs = [(rng.randrange(len(texts)), rng.choice(list(ADAPTERS))) for _ in range(rng.randint(2, 40))]
    check(engine, texts, expected, pairs)


def test_every_text_with_every_adapter_in_one_batch(engine, loaded):
    texts, expected = loaded
    pairs = [(i, m) for i in range(len(texts)) for m in ADAPTERS]
    random.Random(0).shuffle(pairs)
    check(engine, texts, expected, pairs)


def test_labels_follow_the_label_map_order(engine, loaded):
    texts, _ = loaded
    [alpha, beta, gamma] = engine.classify(texts[:3], ["alpha", "team/beta", "gamma"])
    assert alpha.labels == ("类别A", "类别B", "类别C")
    assert beta.labels == tuple(f"类别{c}" for c in "ABCDE")
    assert gamma.labels == ("类别A", "类别B")
    top = beta.top(10)
    assert len(top) == 5 and [p for _, p in top] == sorted((p for _, p in top), reverse=True)


def test_a_small_token_budget_cuts_many_runs_and_keeps_every_row_in_place(engine, loaded, monkeypatch):
    """Each run of similar length is its own forward, mixing adapters; results come back in the order asked."""
    texts, expected = loaded
    monkeypatch.setattr(engine, "max_batch_tokens", 48)
    pairs = [(i, m) for i in range(len(texts)) for m in ADAPTERS]
    random.Random(1).shuffle(pairs)
    check(engine, texts, expected, pairs)


@pytest.mark.parametrize("forward_tokens", [0, 40, 100_000])
def test_a_forwards_fixed_cost_changes_the_runs_not_the_results(engine, loaded, monkeypatch, forward_tokens):
    """A GPU's measured fixed cost (forward_tokens) merges runs; every row keeps its probabilities and place."""
    texts, expected = loaded
    monkeypatch.setattr(engine, "max_batch_tokens", 256)
    monkeypatch.setattr(engine, "forward_tokens", forward_tokens)
    pairs = [(i, m) for i in range(len(texts)) for m in ADAPTERS]
    random.Random(2).shuffle(pairs)
    check(engine, texts, expected, pairs)


@pytest.mark.parametrize("budget", [8, 48, 1000, 16384])
def test_a_forwards_fixed_cost_is_not_applied_on_a_cpu_and_is_measured_within_the_budget(engine, monkeypatch, budget):
    assert engine.device.type == "cpu" and engine.forward_tokens == 0  # a CPU's forward costs its tokens
    monkeypatch.setattr(engine, "max_batch_tokens", budget)
    measured = engine.measure_forward_tokens(repeats=1)
    assert isinstance(measured, int) and 0 <= measured <= budget
