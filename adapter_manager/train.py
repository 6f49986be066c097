"""Reference trainer: fine-tune a LoRA text classifier over the base encoder and write a training output.

    python -m adapter_manager.train --base DIR --data FILE --out DIR --name NAME

`--data` is CSV (with a `text,label` header) or JSONL (`{"text": ..., "label": ...}` per line). The output
directory receives the contract's three artifacts: `<stem>.lora/`, `<stem>.head.pt`, `<stem>.head.pt.pkl`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import pickle
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoTokenizer

from .layout import ADAPTER_SUFFIX, HEAD_SUFFIX, LABELS_SUFFIX
from .pooling import pool

log = logging.getLogger("adapter_manager.train")


@dataclass(frozen=True)
class TrainingConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "value")
    pooling: str = "cls"
    epochs: int = 10
    learning_rate: float = 5e-3
    batch_size: int = 16
    max_length: int = 128
    seed: int = 0


@dataclass(frozen=True)
class TrainingResult:
    stem: str
    labels: tuple[str, ...]
    final_loss: float
    train_accuracy: float


def read_examples(path: Path) -> list[tuple[str, str]]:
    """(text, label) pairs from a CSV with a header row or a JSONL file; labels are kept as strings."""
    rows: list[dict] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    else:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    examples = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "text" not in row or "label" not in row:
            raise ValueError(f"{path}: row {number} needs the fields text and label")
        examples.append((str(row["text"]), str(row["label"])))
    if len({label for _, label in examples}) < 2:
        raise ValueError(f"{path}: need at least two distinct labels to train a classifier")
    return examples


def train(
    base_dir: Path, examples: Sequence[tuple[str, str]], out_dir: Path, name: str, config: TrainingConfig
) -> TrainingResult:
    """Fine-tune LoRA + a linear head on `examples` and write the three artifacts into `out_dir`."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    labels = tuple(sorted({label for _, label in examples}))
    label_index = {label: i for i, label in enumerate(labels)}

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(base_dir), local_files_only=True, dtype=torch.float32)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft annotates int, but the alpha/r scale takes any number
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
    )
    model = get_peft_model(encoder, lora)
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))
    parameters = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate)

    data = list(examples)
    loss_value = float("nan")
    for epoch in range(config.epochs):
        model.train()
        rng.shuffle(data)
        total = 0.0
        for start in range(0, len(data), config.batch_size):
            chunk = data[start : start + config.batch_size]
            logits = _logits(model, head, tokenizer, [t for t, _ in chunk], config)
            target = torch.tensor([label_index[label] for _, label in chunk])
            loss = torch.nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(chunk)
        loss_value = total / len(data)
        log.info("epoch %d/%d: loss %.4f", epoch + 1, config.epochs, loss_value)

    model.eval()
    with torch.no_grad():
        predicted = []
        for start in range(0, len(data), config.batch_size):
            chunk = data[start : start + config.batch_size]
            predicted += _logits(model, head, tokenizer, [t for t, _ in chunk], config).argmax(-1).tolist()
    accuracy = sum(labels[p] == label for p, (_, label) in zip(predicted, data)) / len(data)

    stem = name[: -len(".pt")] if name.endswith(".pt") else name
    write_training_output(out_dir, stem, model, head, labels, config.pooling)
    return TrainingResult(stem=stem, labels=labels, final_loss=loss_value, train_accuracy=accuracy)


def _logits(model, head, tokenizer, texts: list[str], config: TrainingConfig) -> torch.Tensor:
    batch = tokenizer(texts, truncation=True, max_length=config.max_length, padding=True, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    return head(pool(hidden, batch["attention_mask"], config.pooling))


def write_training_output(
    out_dir: Path, stem: str, model, head: torch.nn.Module, labels: Sequence[str], pooling: str
) -> None:
    """Write `<stem>.lora/`, `<stem>.head.pt`, `<stem>.head.pt.pkl`, each replaced whole (never half-written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    head_obj = state if pooling == "cls" else {"state_dict": state, "pooling": pooling}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".writing-") as staging:
        staging_dir = Path(staging)
        model.save_pretrained(str(staging_dir / f"{stem}{ADAPTER_SUFFIX}"))
        torch.save(head_obj, staging_dir / f"{stem}{HEAD_SUFFIX}")
        with (staging_dir / f"{stem}{LABELS_SUFFIX}").open("wb") as handle:
            pickle.dump(list(labels), handle, protocol=4)
        adapter_dir = out_dir / f"{stem}{ADAPTER_SUFFIX}"
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        os.replace(staging_dir / adapter_dir.name, adapter_dir)
        for suffix in (HEAD_SUFFIX, LABELS_SUFFIX):
            os.replace(staging_dir / f"{stem}{suffix}", out_dir / f"{stem}{suffix}")


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(prog="python -m adapter_manager.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="local Hugging Face encoder directory")
    parser.add_argument("--data", type=Path, required=True, help="CSV or JSONL of text,label")
    parser.add_argument("--out", type=Path, required=True, help="training output directory to write")
    parser.add_argument("--name", required=True, help="model name; '<stem>' or '<stem>.pt'")
    parser.add_argument("--rank", type=int, default=defaults.rank)
    parser.add_argument("--alpha", type=float, default=defaults.alpha)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--target-modules", default=",".join(defaults.target_modules), help="comma-separated")
    parser.add_argument("--pooling", choices=("cls", "mean"), default=defaults.pooling)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = TrainingConfig(
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=tuple(m.strip() for m in args.target_modules.split(",") if m.strip()),
        pooling=args.pooling,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
    )
    result = train(args.base, read_examples(args.data), args.out, args.name, config)
    log.info(
        "wrote %s/%s.{lora,head.pt,head.pt.pkl}: %d labels, final loss %.4f, training accuracy %.1f%%",
        args.out,
        result.stem,
        len(result.labels),
        result.final_loss,
        result.train_accuracy * 100,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
