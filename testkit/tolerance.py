"""Comparing two predictions of the same texts within the contract's tolerance.

Triton's dynamic batching puts concurrent requests into different batches, so the float sums behind a
probability run in a different order and its last bits differ from one request to the next. Two answers for
the same texts and model are therefore equal in every field except the probabilities, which agree within
TOLERANCE. Near-ties (neighbouring probabilities within 2 * TOLERANCE of each other) may swap places in the
ranking (`labels`, `top_n`), including at the top_n cut-off; a clear ranking change is still an error.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping, Sequence

TOLERANCE = 1e-4  # the contract's: probabilities of the same text agree within this, whatever the batch

WITH_PROBABILITIES = ("labels", "top_n", "label_probabilities")  # compared within tol, not exactly


def assert_close_distribution(
    actual: Mapping[str, float], expected: Mapping[str, float], tol: float = TOLERANCE, where: str = ""
) -> None:
    """The same labels in the same order, every probability within `tol`."""
    assert list(actual) == list(expected), (
        f"{where}labels differ or are out of order: {list(actual)} != {list(expected)}"
    )
    worst = max((abs(actual[k] - expected[k]) for k in expected), default=0.0)
    assert worst <= tol, f"{where}max difference {worst:.2e} > {tol}: {dict(actual)} != {dict(expected)}"


def assert_same_rows(
    actual: Sequence[Mapping[str, float]], expected: Sequence[Mapping[str, float]], tol: float = TOLERANCE
) -> None:
    """LoraClient.predict's rows (one {label: probability} per text, label-map order) of two requests."""
    assert len(actual) == len(expected), f"{len(actual)} rows != {len(expected)}"
    for i, (got, want) in enumerate(zip(actual, expected)):
        assert_close_distribution(got, want, tol, f"row {i}: ")


def assert_same_ranking(
    actual_top: Sequence[Sequence[Any]],
    expected_top: Sequence[Sequence[Any]],
    expected_distribution: Mapping[str, float] | None = None,
    tol: float = TOLERANCE,
    where: str = "",
) -> None:
    """A top_n list ([label, probability] pairs, highest first) against the expected one.

    Position j may hold a label other than the expected one only where that label's expected probability is
    within 2 * tol of the expected j-th probability (a near-tie; if every probability is within tol, no other
    order can occur). `expected_distribution` (every label's expected probability) lets a near-tied label from
    beyond the cut-off take the last places; without it, only labels of the expected top_n are known.
    """
    assert len(actual_top) == len(expected_top), f"{where}top_n has {len(actual_top)} entries, not {len(expected_top)}"
    known = dict(expected_distribution) if expected_distribution is not None else dict(expected_top)
    labels = [entry[0] for entry in actual_top]
    assert len(set(labels)) == len(labels), f"{where}a label appears twice in top_n: {labels}"
    for j, ((label, p), (want_label, want_p)) in enumerate(zip(actual_top, expected_top)):
        at = f"{where}top_n[{j}] {label!r} (expected {want_label!r}): "
        assert abs(p - want_p) <= tol, f"{at}probability {p} vs {want_p} at this place"
        if label == want_label:
            continue
        if label in known:
            assert abs(p - known[label]) <= tol, f"{at}probability {p} vs {known[label]} expected for it"
            assert abs(known[label] - want_p) <= 2 * tol, f"{at}a ranking change, not a near-tie"
        else:  # only possible without expected_distribution: a label from beyond the expected cut-off
            assert abs(want_p - expected_top[-1][1]) <= 2 * tol, f"{at}an unexpected label above the cut-off"


def assert_same_predictions(
    actual_body: Mapping[str, Any], expected_body: Mapping[str, Any], tol: float = TOLERANCE
) -> None:
    """Two /predict bodies (api_shim.responses.predict_body) for the same texts, model and top_n.

    The same fields in the same order, every field but the probabilities equal exactly; `label_probabilities`
    within `tol` (same labels, same order); `top_n` and `labels` in the same ranking up to near-ties.
    """
    assert list(actual_body) == list(expected_body), f"fields {list(actual_body)} != {list(expected_body)}"
    for field in expected_body:
        if field not in WITH_PROBABILITIES:
            assert actual_body[field] == expected_body[field], (
                f"{field}: {actual_body[field]!r} != {expected_body[field]!r}"
            )
    distributions = expected_body["label_probabilities"]
    assert len(actual_body["label_probabilities"]) == len(distributions), "a different number of texts"
    assert len(actual_body["labels"]) == len(actual_body["top_n"]) == len(distributions), "a different number of texts"
    for i, want in enumerate(distributions):
        got = actual_body["label_probabilities"][i]
        assert_close_distribution(got, want, tol, f"text {i}: ")
        assert_same_ranking(actual_body["top_n"][i], expected_body["top_n"][i], want, tol, f"text {i}: ")
        label, want_label = actual_body["labels"][i], expected_body["labels"][i]
        if label != want_label:  # the top-1 label may only be a near-tie of the expected one
            assert label in want and abs(want[label] - want[want_label]) <= 2 * tol, (
                f"text {i}: label {label!r} != {want_label!r}, not a near-tie"
            )
