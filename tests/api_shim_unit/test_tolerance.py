"""testkit/tolerance.py: two predictions agree within the contract's 1e-4, near-ties may swap, nothing more."""

from __future__ import annotations

import pytest

from api_shim.gateway import Prediction
from api_shim.responses import predict_body
from testkit.tolerance import TOLERANCE, assert_same_predictions, assert_same_rows

LABELS = ("甲", "乙", "丙", "丁")


def body(*rows: tuple[float, ...], top_n: int = 3, model_id: str = "m") -> dict:
    return predict_body(model_id, [Prediction(LABELS, row) for row in rows], top_n)


EXPECTED = (0.5, 0.3, 0.15, 0.05)


def test_the_tolerance_is_the_contracts():
    assert TOLERANCE == 1e-4


def test_a_difference_of_1e_6_is_accepted():
    assert_same_predictions(body((0.5 + 1e-6, 0.3 - 1e-6, 0.15, 0.05)), body(EXPECTED))
    assert_same_rows([dict(zip(LABELS, (0.5 + 1e-6, 0.3 - 1e-6, 0.15, 0.05)))], [dict(zip(LABELS, EXPECTED))])


def test_a_near_tie_may_swap_places_at_the_top_and_at_the_cut_off():
    expected = body((0.40002, 0.39998, 0.1, 0.1), (0.5, 0.3, 0.10001, 0.09999), top_n=3)
    actual = body((0.39999, 0.40001, 0.1, 0.1), (0.5, 0.3, 0.09999, 0.10001), top_n=3)
    assert actual["labels"][0] == "乙" and actual["top_n"][1][2][0] == "丁"  # swapped: top-1 and past the cut-off
    assert_same_predictions(actual, expected)


def test_a_difference_of_1e_3_is_rejected():
    with pytest.raises(AssertionError, match="max difference"):
        assert_same_predictions(body((0.5 + 1e-3, 0.3 - 1e-3, 0.15, 0.05)), body(EXPECTED))
    with pytest.raises(AssertionError, match="max difference"):
        assert_same_rows([dict(zip(LABELS, (0.5 + 1e-3, 0.3 - 1e-3, 0.15, 0.05)))], [dict(zip(LABELS, EXPECTED))])


def test_a_clear_ranking_change_is_rejected():
    expected = body(EXPECTED)
    reordered = body(EXPECTED)
    reordered["top_n"][0][0:2] = reordered["top_n"][0][1::-1]  # 乙 (0.3) ranked above 甲 (0.5)
    with pytest.raises(AssertionError, match="top_n"):
        assert_same_predictions(reordered, expected)
    wrong_top = body(EXPECTED)
    wrong_top["labels"] = ["乙"]
    with pytest.raises(AssertionError, match="not a near-tie"):
        assert_same_predictions(wrong_top, expected)
    crossed_cut_off = body((0.5, 0.3, 0.1001, 0.0999), top_n=2)  # 丙 and 丁 are not among the top two
    crossed_cut_off["top_n"][0][1] = ["丙", 0.1001]
    with pytest.raises(AssertionError, match="top_n"):
        assert_same_predictions(crossed_cut_off, body((0.5, 0.3, 0.1001, 0.0999), top_n=2))


def test_other_fields_compare_exactly():
    with pytest.raises(AssertionError, match="model_id"):
        assert_same_predictions(body(EXPECTED, model_id="other"), body(EXPECTED))
    with pytest.raises(AssertionError, match="labels differ"):
        assert_same_rows([dict(zip(reversed(LABELS), EXPECTED))], [dict(zip(LABELS, EXPECTED))])
