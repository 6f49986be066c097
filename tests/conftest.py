"""Shared fixtures: one tiny base encoder per session, a fresh models root and engine per test."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import pytest

from testkit.factories import OutputSpec, Reference, make_tiny_base, make_training_output
from testkit.tolerance import TOLERANCE
from testkit.triton_harness import TritonServer, server_settings

PARITY_TOLERANCE = TOLERANCE


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def reference(base_dir: Path) -> Reference:
    return Reference(base_dir)


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def engine(base_dir: Path, models_root: Path):
    from adapter_manager import AdapterEngine

    return AdapterEngine(base_dir, models_root, device="cpu", dtype="float32")


def assert_matches_reference(
    engine, reference: Reference, model_id: str, output_dir: Path, texts: Sequence[str], max_length: int = 512
) -> None:
    """The engine's probabilities for `texts` with `model_id` equal the reference within the contract's 1e-4."""
    results = engine.classify(list(texts), [model_id] * len(texts))
    expected = reference.probabilities(output_dir, texts, max_length)
    for result, want in zip(results, expected):
        np.testing.assert_allclose(result.probabilities, want, atol=PARITY_TOLERANCE, rtol=0)
        assert abs(float(result.probabilities.sum()) - 1.0) < 1e-5


# ------------------------------------------------------------------- a real tritonserver (session)

MAX_ADAPTERS = 10
# The models every Triton test can load: different ranks, targets, heads, pooling and label counts.
MODELS = {
    "alpha": OutputSpec(rank=4, target_modules=("query", "value"), num_labels=3, seed=11),
    "team/beta": OutputSpec(
        stem="beta",
        rank=8,
        target_modules=("query", "key", "value", "dense"),
        num_labels=5,
        head_layout="two-layer",
        pooling="mean",
        weights_format="bin",
        seed=12,
    ),
    "gamma": OutputSpec(
        stem="gamma", rank=2, target_modules=("key",), num_labels=2, labels_format="label_to_index", seed=13
    ),
    **{f"bench-{i}": OutputSpec(stem=f"bench{i}", rank=8, num_labels=4, seed=20 + i) for i in range(8)},
}


@pytest.fixture(scope="session")
def triton_models_root(tmp_path_factory, base_dir) -> Path:
    root = tmp_path_factory.mktemp("triton-models")
    for model_id, spec in MODELS.items():
        make_training_output(root, model_id, base_dir, spec)
    broken = make_training_output(root, "broken", base_dir, OutputSpec(seed=99))
    (broken / "model.head.pt.pkl").write_bytes(b"not a pickle")
    return root


@pytest.fixture(scope="session")
def triton(tmp_path_factory, base_dir, triton_models_root):
    workdir = tmp_path_factory.mktemp("triton")
    env = server_settings(base_dir, triton_models_root, workdir / "state", MAX_ADAPTERS=str(MAX_ADAPTERS))
    server = TritonServer(workdir, env, instances=2)
    server.start()
    yield server
    server.stop()
