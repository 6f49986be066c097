"""GROUP: one Triton request carrying several clients' predicts, each run of rows answered or failed alone."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton_http

from lora_core.errors import from_wire
from testkit.triton_harness import MODEL
from testkit.triton_tests_helpers import assert_rows_close, expected_rows

OUTPUTS = ("PROBABILITIES", "LABELS", "NUM_LABELS", "EXECUTE_US", "ERROR")


def grouped(client, groups: list[tuple[list[str], list[str]]], marks: list[int] | None = None):
    """Send `groups` (texts, model_ids) as one request; each group's rows (label -> probability) or its error."""
    texts = [t for g, _ in groups for t in g]
    ids = [m for _, g in groups for m in g]
    marks = marks if marks is not None else [i for i, (g, _) in enumerate(groups) for _ in g]
    inputs = []
    for name, values in (("TEXT", texts), ("MODEL_ID", ids)):
        tensor = triton_http.InferInput(name, [len(values), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[v.encode()] for v in values], dtype=object))
        inputs.append(tensor)
    group = triton_http.InferInput("GROUP", [len(marks), 1], "INT32")
    group.set_data_from_numpy(np.array([[m] for m in marks], dtype=np.int32))
    result = client.client.infer(
        MODEL, [*inputs, group], outputs=[triton_http.InferRequestedOutput(n) for n in OUTPUTS]
    )
    probabilities, labels = result.as_numpy("PROBABILITIES"), result.as_numpy("LABELS")
    counts, errors = result.as_numpy("NUM_LABELS")[:, 0], result.as_numpy("ERROR")[:, 0]
    rows = []
    for row, count in enumerate(counts):
        if errors[row]:
            assert count == 0
            rows.append(from_wire(errors[row].decode()))
        else:
            rows.append({labels[row, i].decode(): float(probabilities[row, i]) for i in range(count)})
    return rows


def test_each_group_is_answered_alone_and_a_bad_one_fails_only_its_rows(client, reference, triton_models_root):
    client.control({"op": "load", "model_dir": "alpha"})
    client.control({"op": "load", "model_dir": "gamma"})
    if "team/beta" in client.loaded():
        client.control({"op": "unload", "model_id": "team/beta"})
    groups = [
        (["one text"], ["alpha"]),
        (["two", "texts here"], ["team/beta", "team/beta"]),  # not loaded
        (["mixed ids", "in a group"], ["gamma", "alpha"]),
        (["", "empty text and a long one " * 40], ["gamma", "gamma"]),
        (["loaded", "not loaded"], ["alpha", "nobody"]),  # one id missing fails the whole group
    ]
    rows = grouped(client, groups)
    assert len(rows) == 9
    want = []
    for texts, ids in (groups[0], groups[2], groups[3]):
        want += [expected_rows(reference, triton_models_root, m, [t])[0] for t, m in zip(texts, ids)]
    for got, expected in zip(rows[0:1] + rows[3:7], want):
        assert isinstance(got, dict), got
        assert_rows_close(got, expected)
    for failed, missing in ((rows[1:3], "team/beta"), (rows[7:9], "nobody")):
        for error in failed:
            assert error is not None and error.code == "model_not_loaded" and missing in error.message


@pytest.mark.parametrize("marks", [[7, 7, 7], [0, 1, 2], [3, 3, 9]])
def test_groups_are_runs_of_equal_marks_whatever_their_values(client, marks):
    client.control({"op": "load", "model_dir": "alpha"})
    texts = ["a b", "c d", "e f"]
    rows = grouped(client, [(texts, ["alpha", "alpha", "alpha"])], marks)
    assert all(isinstance(row, dict) and len(row) == 3 for row in rows)


def test_a_group_whose_rows_disagree_with_the_texts_is_refused_whole(client):
    client.control({"op": "load", "model_dir": "alpha"})
    with pytest.raises(Exception, match="batch size does not match"):  # Triton checks the rows itself
        grouped(client, [(["a", "b"], ["alpha", "alpha"])], [0])
