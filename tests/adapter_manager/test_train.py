"""The reference trainer fine-tunes a real LoRA classifier and writes a training output the engine serves."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from adapter_manager.train import read_examples
from testkit.factories import WORDS

TOPICS = {"体育": WORDS[0:8], "美食": WORDS[8:16], "科技": WORDS[16:24]}
FILLER = WORDS[100:160]


def make_texts(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Texts whose topic is given by four of their seven words; the rest is shared filler."""
    rows = []
    for i in range(count):
        label = list(TOPICS)[i % len(TOPICS)]
        words = rng.sample(TOPICS[label], 4) + rng.sample(FILLER, 3)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.mark.parametrize("data_format", ["csv", "jsonl"])
def test_trained_model_classifies_held_out_texts(engine, base_dir, models_root, tmp_path, data_format):
    rng = random.Random(1)
    train_rows = make_texts(rng, 240)
    seen = {frozenset(text.split()) for text, _ in train_rows}
    held_out = [row for row in make_texts(rng, 80) if frozenset(row[0].split()) not in seen]
    assert len(held_out) >= 60
    data = tmp_path / f"train.{data_format}"
    if data_format == "csv":
        with data.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(train_rows)
    else:
        data.write_text(
            "".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n" for t, label in train_rows)
        )

    command = [
        sys.executable,
        "-m",
        "adapter_manager.train",
        "--base",
        str(base_dir),
        "--data",
        str(data),
        "--out",
        str(models_root / "topics"),
        "--name",
        "topics.pt",
        "--epochs",
        "10",
        "--lr",
        "1e-2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (models_root / "topics").iterdir()) == [
        "topics.head.pt",
        "topics.head.pt.pkl",
        "topics.lora",
    ]

    assert engine.load("topics").adapter.labels == tuple(sorted(TOPICS))
    results = engine.classify([t for t, _ in held_out], ["topics"] * len(held_out))
    wrong = [(text, label, r.top(1)) for (text, label), r in zip(held_out, results) if r.top(1)[0][0] != label]
    assert not wrong


def test_mean_pooling_is_written_with_the_head(base_dir, tmp_path):
    from adapter_manager.train import TrainingConfig, train

    import torch

    rows = make_texts(random.Random(2), 30)
    result = train(base_dir, rows, tmp_path / "out", "m", TrainingConfig(epochs=1, pooling="mean"))
    head = torch.load(tmp_path / "out" / "m.head.pt", weights_only=True)
    assert head["pooling"] == "mean" and set(head["state_dict"]) == {"weight", "bias"}
    assert result.stem == "m" and len(result.labels) == 3


def test_data_without_the_needed_fields_is_refused(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("sentence,category\nhello,a\n")
    with pytest.raises(ValueError, match="row 1 needs the fields text and label"):
        read_examples(data)


def test_a_single_label_cannot_train_a_classifier(tmp_path):
    data = tmp_path / "one.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    with pytest.raises(ValueError, match="two distinct labels"):
        read_examples(data)
