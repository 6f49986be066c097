"""The lean BERT forward (adapter_manager/lean_bert.py) computes what transformers' BertModel computes, with and
without padding, with LoRA plans shared and per row, on other shapes and activations; architectures it does not
know keep transformers' forward."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

from adapter_manager.lean_bert import LeanBert, lean_forward
from adapter_manager.lora import ModuleWeights, RowLora, stack_module, wrap_linear
from testkit.factories import OutputSpec, make_training_output, random_text

# A float32 forward of the same operations in the same order: equal to rounding.
HIDDEN_TOLERANCE = 1e-5


def bert(hidden: int = 48, layers: int = 3, heads: int = 6, act: str = "gelu", seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=300,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 3,
        max_position_embeddings=64,
        hidden_act=act,
    )
    return BertModel(config).eval().requires_grad_(False)


def batch(rows: list[int], vocab: int = 300, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask for rows of the given lengths, padded with 0."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for row, length in enumerate(rows):
        ids[row, :length] = torch.randint(1, vocab, (length,), generator=generator)
        mask[row, :length] = 1
    return ids, mask


def assert_same_states(model: BertModel, lean: LeanBert, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Equal on every real token (a padded position's state is never read: pooling masks it)."""
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        ragged = bool((mask == 0).any())
        got = lean(ids, mask if ragged else None)
    assert got.shape == expected.shape
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=HIDDEN_TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    "shape",
    [
        dict(hidden=48, layers=3, heads=6, act="gelu"),
        dict(hidden=32, layers=1, heads=1, act="gelu_new"),
        dict(hidden=64, layers=2, heads=4, act="relu"),
        dict(hidden=40, layers=2, heads=8, act="silu"),
    ],
)
@pytest.mark.parametrize("rows", [[1], [7], [5, 5, 5], [1, 9, 3, 17], [33, 2]])
def test_the_lean_forward_equals_transformers(shape, rows):
    model = bert(**shape)
    assert_same_states(model, LeanBert(model), *batch(rows))


def lora_weights(model: BertModel, name: str, rank: int, seed: int) -> ModuleWeights:
    linear = model.get_submodule(name)
    generator = torch.Generator().manual_seed(seed)
    a_t = torch.randn(linear.in_features, rank, generator=generator) * 0.2
    b_t = torch.randn(rank, linear.out_features, generator=generator) * 0.2
    return ModuleWeights(a_t=a_t, b_t=b_t)


LORA_MODULES = (
    "encoder.layer.0.attention.self.query",
    "encoder.layer.0.attention.self.value",
    "encoder.layer.1.attention.output.dense",
    "encoder.layer.1.intermediate.dense",
    "encoder.layer.2.output.dense",
    "encoder.layer.2.attention.self.key",
)


@pytest.mark.parametrize("per_row", [False, True])
def test_lora_plans_apply_in_the_lean_forward_as_in_transformers(per_row):
    """Wrappers added after the lean forward was built (as the engine adds them) take effect once refreshed."""
    model = bert()
    lean = LeanBert(model)
    wrappers = {name: wrap_linear(model, name) for name in LORA_MODULES}
    lean.refresh()
    ids, mask = batch([6, 11, 2, 11])
    for i, (name, wrapper) in enumerate(wrappers.items()):
        first = lora_weights(model, name, rank=4, seed=i)
        if per_row:
            second = None if i % 3 == 0 else lora_weights(model, name, rank=2, seed=100 + i)
            bank = stack_module([first, second])
            assert bank is not None
            wrapper.plan = bank.rows(torch.tensor([0, 1, 1, 0]))
        else:
            wrapper.plan = RowLora(shared=first)
    assert_same_states(model, lean, ids, mask)
    for wrapper in wrappers.values():
        wrapper.plan = None
    assert_same_states(model, lean, ids, mask)


def test_a_stale_lean_forward_would_miss_the_wrappers():
    """Why the engine refreshes: without it the lean forward reads the Linear the wrapper replaced."""
    model = bert()
    lean = LeanBert(model)
    wrapper = wrap_linear(model, LORA_MODULES[0])
    wrapper.plan = RowLora(shared=lora_weights(model, LORA_MODULES[0], rank=4, seed=0))
    ids, mask = batch([9, 4])
    with torch.inference_mode():
        stale = lean(ids, mask)
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(stale[mask.bool()], expected[mask.bool()], atol=1e-3)
    lean.refresh()
    assert_same_states(model, lean, ids, mask)


def tiny(config_class, model_class, **extra):
    torch.manual_seed(0)
    common = dict(vocab_size=100, max_position_embeddings=64)
    if config_class is DistilBertConfig:
        config = config_class(dim=32, n_layers=1, n_heads=2, hidden_dim=64, **common, **extra)
    else:
        config = config_class(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, **common, **extra
        )
    return model_class(config)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: tiny(RobertaConfig, RobertaModel), id="roberta"),
        pytest.param(lambda: tiny(DistilBertConfig, DistilBertModel), id="distilbert"),
        pytest.param(lambda: tiny(BertConfig, BertModel, is_decoder=True), id="bert-decoder"),
        pytest.param(lambda: tiny(BertConfig, BertModel, chunk_size_feed_forward=4), id="bert-chunked"),
    ],
)
def test_other_architectures_keep_the_transformers_forward(model):
    assert lean_forward(model()) is None


def test_the_engine_runs_the_lean_forward_and_answers_as_with_transformers(engine, models_root, base_dir):
    specs = {
        "one": OutputSpec(rank=4, target_modules=("query", "value"), num_labels=3, seed=1),
        "two": OutputSpec(stem="two", rank=8, target_modules=("key", "dense"), pooling="mean", num_labels=4, seed=2),
    }
    for model_id, spec in specs.items():
        make_training_output(models_root, model_id, base_dir, spec)
        engine.load(model_id)
    assert engine._lean is not None  # the test base is a BERT: a fallback to transformers would be caught here
    rng = random.Random(5)
    texts = [random_text(rng, rng.randint(0, 30)) for _ in range(10)] + ["", "类别 好坏"]
    ids = [("one", "two")[i % 2] for i in range(len(texts))]
    for rows in (slice(0, 1), slice(0, 5), slice(None)):  # one row, a few, mixed lengths and adapters
        lean = engine.classify(texts[rows], ids[rows])
        engine._lean, kept = None, engine._lean
        try:
            reference = engine.classify(texts[rows], ids[rows])
        finally:
            engine._lean = kept
        for got, expected in zip(lean, reference):
            np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-6, rtol=0)
