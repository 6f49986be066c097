"""Expected results for Triton tests: the reference computation, keyed like LoraClient.predict's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from adapter_manager.artifacts import read_labels

TOLERANCE = 1e-4


def expected_rows(reference, models_root: Path, model_id: str, texts: Sequence[str], max_length: int = 512):
    out = models_root / model_id
    labels = read_labels(next(out.glob("*.head.pt.pkl")), "labels")
    return [dict(zip(labels, probs)) for probs in reference.probabilities(out, texts, max_length)]


def assert_rows_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want), "labels differ or are out of order"
    worst = max(abs(got[k] - want[k]) for k in want)
    assert worst <= TOLERANCE, f"max difference {worst:.2e} > {TOLERANCE}"
