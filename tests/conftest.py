"""Shared fixtures: one tiny base encoder per session, a fresh models root and engine per test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import pytest

from factories import Reference, make_tiny_base

PARITY_TOLERANCE = 1e-4


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

    return AdapterEngine(base_dir, models_root, device="cpu", dtype="float32", max_adapters=16)


def assert_matches_reference(
    engine, reference: Reference, model_id: str, output_dir: Path, texts: Sequence[str], max_length: int = 512
) -> None:
    """The engine's probabilities for `texts` with `model_id` equal the reference within the contract's 1e-4."""
    results = engine.classify(list(texts), [model_id] * len(texts))
    expected = reference.probabilities(output_dir, texts, max_length)
    for result, want in zip(results, expected):
        np.testing.assert_allclose(result.probabilities, want, atol=PARITY_TOLERANCE, rtol=0)
        assert abs(float(result.probabilities.sum()) - 1.0) < 1e-5
