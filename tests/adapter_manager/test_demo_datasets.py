"""The demo's datasets: a few hundred texts per task, Chinese labels, a held-out split that shares no text."""

from __future__ import annotations

import re

import pytest

from adapter_manager.train import read_examples
from testkit.triton_harness import REPO

DATASETS = REPO / "scripts" / "demo" / "datasets"


@pytest.mark.parametrize("task", ["support_intent", "review_sentiment", "news_topic"])
def test_demo_dataset_is_usable(task):
    train = read_examples(DATASETS / task / "train.csv")
    test = read_examples(DATASETS / task / "test.csv")
    assert len(train) + len(test) >= 200 and len(test) >= 40
    assert not {t for t, _ in train} & {t for t, _ in test}, "held-out texts must not appear in training"
    labels = {label for _, label in train}
    assert labels == {label for _, label in test}
    assert all(re.fullmatch(r"[\u4e00-\u9fff]+", label) for label in labels)
