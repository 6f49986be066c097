"""In-process throughput of the engine, on the same texts in one run:

  bare        the base encoder alone (tokenize + forward), the ceiling
  one         AdapterEngine.classify, every text on one adapter
  mixed-8     AdapterEngine.classify, texts spread round-robin over 8 adapters
  mixed-64    AdapterEngine.classify, every row on a different adapter, batches cycling through 64
  peft-one    PEFT's PeftModel, one active adapter (what a user would write)
  peft-mixed  PEFT's mixed-batch path (`adapter_names=`), 8 adapters

Rounds interleave the modes so that machine noise hits all of them alike; ratios are computed within each
round, then summarised as median [min-max].

    .venv/bin/python -m bench.engine_throughput [--base DIR] [--rounds 5] [--batch 16] [--length short|long]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from collections.abc import Callable

from bench.stack import bench_base, prepare_adapters  # sets up the HF environment

import torch
from peft import PeftModel
from transformers import AutoModel

from adapter_manager import AdapterEngine
from testkit.measure import summary, throughput
from testkit.texts import make_texts

# Words per text: about 16 and 128 tokens with MiniLM's tokenizer.
TEXT_WORDS = {"short": 7, "long": 60}


def measure(
    base: Path,
    root: Path,
    ids: list[str],
    texts: list[str],
    rounds: int,
    seconds: float,
    wide: int = 0,
    peft: bool = True,
) -> dict[str, list[float]]:
    """texts/s per mode (see the module doc) for every round; `ids[:8]` are the mixed adapters and, with
    `wide`, batches cycle through `ids[:wide]` with every row on a different adapter."""
    engine = AdapterEngine(base, root, device="cpu", dtype="float32")
    mixed_ids = ids[:8]
    for model_id in ids[: max(8, wide)]:
        engine.load(model_id)
    mixed_rows = [mixed_ids[i % len(mixed_ids)] for i in range(len(texts))]

    def bare() -> None:
        with torch.inference_mode():
            engine.model(**engine._tokenize(texts, [512] * len(texts)))

    modes: dict[str, Callable[[], object]] = {
        "bare": bare,
        "one": lambda: engine.classify(texts, [ids[0]] * len(texts)),
        "mixed-8": lambda: engine.classify(texts, mixed_rows),
    }
    if wide:
        turn = iter(range(1 << 62))

        def wide_batch() -> None:
            first = next(turn) * len(texts)
            engine.classify(texts, [ids[(first + i) % wide] for i in range(len(texts))])

        modes[f"mixed-{wide}"] = wide_batch
    if peft:
        model = PeftModel.from_pretrained(
            AutoModel.from_pretrained(str(base)), str(root / ids[0] / "model.lora"), adapter_name=ids[0]
        )
        for model_id in mixed_ids[1:]:
            model.load_adapter(str(root / model_id / "model.lora"), adapter_name=model_id)
        model.eval()

        def peft_run(names: list[str] | None) -> None:
            batch = engine.tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
            with torch.inference_mode():
                if names is None:
                    model.set_adapter(ids[0])
                    model(**batch)
                else:
                    model(**batch, adapter_names=names)

        modes["peft-one"] = lambda: peft_run(None)
        modes["peft-mixed-8"] = lambda: peft_run(mixed_rows)

    results: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, fn in modes.items():
            results[name].append(throughput(fn, len(texts), seconds))
    results["tokens_per_text"] = [
        engine._tokenize(texts, [512] * len(texts))["attention_mask"].sum(1).float().mean().item()
    ]
    return results


def ratios(results: dict[str, list[float]], a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(results[a], results[b])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", type=Path, default=None, help="encoder dir (default: MiniLM if installed, else a tiny BERT)"
    )
    parser.add_argument("--wide", type=int, default=64, help="also mix this many adapters, one per row (0: skip)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", choices=("short", "long"), default="short", help="~16 or ~128 tokens per text")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per mode per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-peft", action="store_true", help="skip PEFT's own paths")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    base = bench_base(work, args.base)
    ids = [f"adapter-{i}" for i in range(max(8, args.wide))]
    prepare_adapters(work / "models", base, ids)
    texts = make_texts(args.batch, TEXT_WORDS[args.length])
    results = measure(base, work / "models", ids, texts, args.rounds, args.seconds, args.wide, not args.no_peft)
    tokens = results.pop("tokens_per_text")[0]

    print(
        f"base {base} | {torch.get_num_threads()} threads | batch {len(texts)} | ~{tokens:.0f} tokens/text | "
        f"adapters r=8 | {args.rounds} rounds x {args.seconds}s"
    )
    print(f"{'mode':<16} texts/s median [min-max]")
    for name, values in results.items():
        print(f"{name:<16} {summary(values)}")
    print("ratios, pair by pair within each round: median [min-max]")
    pairs = [("one", "bare"), ("mixed-8", "one")]
    if args.wide:
        pairs.append((f"mixed-{args.wide}", "one"))
    if not args.no_peft:
        pairs += [("peft-mixed-8", "peft-one"), ("mixed-8", "peft-mixed-8")]
    for a, b in pairs:
        print(f"  {a + ' / ' + b:<26} {summary(ratios(results, a, b), 3)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
