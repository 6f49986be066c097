"""Expected results for Triton tests: the reference computation, keyed like LoraClient.predict's rows."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

from adapter_manager.artifacts import read_labels
from testkit.tolerance import TOLERANCE, assert_close_distribution

__all__ = ["TOLERANCE", "assert_rows_close", "expected_rows"]


def expected_rows(reference, models_root: Path, model_id: str, texts: Sequence[str], max_length: int = 512):
    out = models_root / model_id
    labels = read_labels(next(out.glob("*.head.pt.pkl")), "labels")
    return [dict(zip(labels, probs)) for probs in reference.probabilities(out, texts, max_length)]


def assert_rows_close(got: dict[str, float], want: dict[str, float]) -> None:
    """One LoraClient.predict row against the reference's: same labels in order, within TOLERANCE."""
    assert_close_distribution(got, want)
