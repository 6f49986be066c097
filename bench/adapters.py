"""Adapter lifecycle figures: load/unload latency, memory with many adapters resident, throughput with many.

    .venv/bin/python -m bench.adapters [--cycles 100] [--levels 1,100,1000]

- latency: load then unload of distinct adapters through the REST API (shim -> Triton -> engine), and
  the engine's own share (`AdapterEngine.load` / `remove`), p50 and p99. Files are read once beforehand,
  so the figures exclude cold disk reads.
- memory: the process's resident set (RSS) with 0, then each level of adapters resident in one engine,
  against the base alone plus 1.3x the adapters' own size (their LoRA and head tensors).
- throughput: 16-text batches (one adapter; 8 adapters mixed) with the largest level resident,
  against an engine with only those 8 resident; rounds interleave the two engines.

Adapters beyond the first 8 are copies of those 8 on disk (generating 1000 with PEFT takes minutes); each
is loaded and held separately, exactly as distinct adapters are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from collections.abc import Sequence

from bench.stack import REPO, Stack, bench_base, prepare_adapters

import psutil
import torch

from adapter_manager import AdapterEngine
from testkit.measure import percentile, rss_mb, summary, throughput
from testkit.texts import make_texts

SEEDS = 8


def adapter_ids(count: int) -> list[str]:
    return [f"adapter-{i:04d}" for i in range(count)]


def prepare_many(root: Path, base: Path, count: int) -> list[str]:
    """`count` adapter directories: 8 generated with PEFT, the rest copies of those."""
    ids = adapter_ids(count)
    prepare_adapters(root, base, ids[:SEEDS])
    for i, model_id in enumerate(ids[SEEDS:], start=SEEDS):
        if not (root / model_id).exists():
            shutil.copytree(root / ids[i % SEEDS], root / model_id)
    return ids


def warm_page_cache(root: Path, ids: Sequence[str]) -> None:
    for model_id in ids:
        for file in (root / model_id).rglob("*"):
            if file.is_file():
                file.read_bytes()


def api_latency(work: Path, base: Path, root: Path, ids: Sequence[str]) -> dict[str, list[float]]:
    """Milliseconds per load and per unload through the REST API, each adapter loaded then unloaded."""
    import requests

    loads, unloads = [], []
    with Stack(work / "stack", base, root) as stack, requests.Session() as http:
        for model_id in ids:
            started = time.perf_counter()
            answer = http.post(f"{stack.api}/inference/models/load", json={"model_dir": model_id}, timeout=60)
            loads.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.text
            started = time.perf_counter()
            answer = http.post(f"{stack.api}/inference/models/unload", json={"model_id": model_id}, timeout=60)
            unloads.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.text
    return {"load_ms": loads, "unload_ms": unloads}


def engine_latency(base: Path, root: Path, ids: Sequence[str]) -> dict[str, list[float]]:
    engine = AdapterEngine(base, root, device="cpu", dtype="float32")
    loads, unloads = [], []
    for model_id in ids:
        started = time.perf_counter()
        engine.load(model_id)
        loads.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        engine.remove(model_id)
        unloads.append((time.perf_counter() - started) * 1000)
    return {"load_ms": loads, "unload_ms": unloads}


def memory_and_throughput(
    base: Path, root: Path, ids: Sequence[str], levels: Sequence[int], rounds: int, seconds: float
) -> dict:
    texts = make_texts(16, 7)
    engine = AdapterEngine(base, root, device="cpu", dtype="float32")
    engine.load(ids[0])
    engine.classify(texts, [ids[0]] * len(texts))  # allocator and kernels warm before the baseline
    engine.remove(ids[0])
    baseline = rss_mb()
    memory = []
    loaded = 0
    for level in levels:
        for model_id in ids[loaded:level]:
            engine.load(model_id)
        loaded = level
        own = sum(a.nbytes for a in engine.resident()) / 2**20
        rss = rss_mb()
        memory.append(
            {
                "adapters": level,
                "rss_mb": rss,
                "growth_mb": rss - baseline,
                "adapters_mb": own,
                "growth_per_adapter_size": (rss - baseline) / own,
            }
        )
    # Throughput with every level's adapters resident vs an engine holding only the 8 it serves.
    served = [ids[i * (loaded // SEEDS)] for i in range(SEEDS)]
    small = AdapterEngine(base, root, device="cpu", dtype="float32")
    for model_id in served:
        small.load(model_id)
    mixed = [served[i % SEEDS] for i in range(len(texts))]
    one = [served[0]] * len(texts)
    modes = {
        "one@8": lambda: small.classify(texts, one),
        f"one@{loaded}": lambda: engine.classify(texts, one),
        "mixed@8": lambda: small.classify(texts, mixed),
        f"mixed@{loaded}": lambda: engine.classify(texts, mixed),
    }
    results: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, fn in modes.items():
            results[name].append(throughput(fn, len(texts), seconds))
    return {"baseline_rss_mb": baseline, "memory": memory, "throughput": results, "many": loaded}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path)
    parser.add_argument("--cycles", type=int, default=100, help="load/unload cycles for the latency figures")
    parser.add_argument("--levels", default="1,100,1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(psutil.cpu_count() or 1)
    work = REPO / "var" / "bench" / "adapters"
    base = bench_base(work, args.base)
    levels = [int(x) for x in args.levels.split(",")]
    root = work / "models"
    ids = prepare_many(root, base, max(max(levels), args.cycles))
    warm_page_cache(root, ids)

    # Memory first: this process has freed nothing yet, so the allocator cannot hide growth in old free space.
    figures = memory_and_throughput(base, root, ids, levels, args.rounds, args.seconds)
    figures["api"] = api_latency(work, base, root, ids[: args.cycles])
    figures["engine"] = engine_latency(base, root, ids[: args.cycles])
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


def print_report(figures: dict) -> None:
    print("load / unload latency, ms: p50  p99  (max)")
    for where in ("api", "engine"):
        for op in ("load_ms", "unload_ms"):
            values = figures[where][op]
            print(
                f"  {where:<7}{op[:-3]:<8}{statistics.median(values):7.1f} "
                f"{percentile(values, 99):7.1f}  ({max(values):.1f})"
            )
    print(f"memory (RSS) over the base alone ({figures['baseline_rss_mb']:.0f} MB):")
    for row in figures["memory"]:
        print(
            f"  {row['adapters']:>5} adapters: +{row['growth_mb']:7.1f} MB for {row['adapters_mb']:7.1f} MB of adapter "
            f"tensors = {row['growth_per_adapter_size']:.2f}x"
        )
    results, many = figures["throughput"], figures["many"]
    print(f"throughput, texts/s, 16-text batches, with {many} resident vs 8 resident:")
    for kind in ("one", "mixed"):
        ratio = [a / b for a, b in zip(results[f"{kind}@{many}"], results[f"{kind}@8"])]
        print(
            f"  {kind:<6} {summary(results[f'{kind}@{many}'])} vs {summary(results[f'{kind}@8'])}: {summary(ratio, 3)}"
        )


if __name__ == "__main__":
    main()
