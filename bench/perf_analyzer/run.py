"""Triton's perf_analyzer against lora_classifier over a concurrency sweep, beside the in-process engine.

    .venv/bin/python -m bench.perf_analyzer.run [--url HOST:PORT] [--concurrency 1,4,8] [--rounds 3]

Without --url it starts its own tritonserver (scripts/run_triton.py) on all-MiniLM-L6-v2 when installed
(`make demo-base`), else on a generated BERT of the same shape, and creates the adapters bench-0..7
(r=8, query/value) that the input files name. With --url the server must already see bench-0..7 under its
MODELS_ROOT; they are loaded through CONTROL. Every figure is texts/s (perf_analyzer's infer/sec with
16-row requests); the in-process engine is measured on the same texts and adapters in the same run, and
the ratio is computed round by round. perf_analyzer comes from the tritonclient platform wheel and needs
Debian's libb64-0d and PyPI's nvidia-cuda-runtime-cu12 (both installed by `make venv`).
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from bench.perf_analyzer.client import perf_analyzer as perf_analyzer_with
from testkit.triton_harness import CONTROL_TOKEN

ADAPTERS = [f"bench-{i}" for i in range(8)]
DEFAULT_INPUTS = ("one_adapter_short", "mixed8_short", "one_adapter_long", "mixed8_long")


def perf_analyzer(url: str, input_file: Path, concurrency: int, batch: int, measurement_ms: int) -> dict[str, float]:
    """bench/perf_analyzer/client.py's, with this venv's binary, against a server holding the test kit's secret."""
    return perf_analyzer_with(url, input_file, concurrency, batch, measurement_ms, CONTROL_TOKEN)


def input_rows(name: str) -> tuple[list[str], list[str]]:
    data = json.loads((HERE / f"{name}.json").read_text(encoding="utf-8"))["data"]
    return [d["TEXT"]["content"][0] for d in data], [d["MODEL_ID"]["content"][0] for d in data]


def measure(
    url: str, inputs: list[str], levels: list[int], rounds: int, measurement_ms: int, batch: int, engine=None
) -> dict:
    """perf_analyzer for every input and concurrency level, `rounds` times; beside it, when `engine` is
    given, the in-process engine on the same rows.
    {"triton": {input: {level: [runs]}}, "in_process": {input: [texts/s]}}"""
    from testkit.measure import throughput

    triton: dict[str, dict[int, list[dict[str, float]]]] = {n: {c: [] for c in levels} for n in inputs}
    ceiling: dict[str, list[float]] = {n: [] for n in inputs}
    for _ in range(rounds):
        for name in inputs:
            if engine is not None:
                texts, model_ids = input_rows(name)
                ceiling[name].append(
                    throughput(partial(engine.classify, texts, model_ids), len(texts), measurement_ms / 1000)
                )
            for level in levels:
                triton[name][level].append(perf_analyzer(url, HERE / f"{name}.json", level, batch, measurement_ms))
    return {"triton": triton, "in_process": ceiling}


def print_report(figures: dict, header: str) -> None:
    from testkit.measure import summary

    print(header)
    line = (
        f"{'input':<18} {'conc':>4} {'texts/s':>18} {'p50 ms':>16} {'p99 ms':>16} {'in-process':>16} "
        f"{'triton/in-proc':>16}"
    )
    print(line)
    print("-" * len(line))
    for name, by_level in figures["triton"].items():
        ceiling = figures["in_process"][name]
        for level, runs in by_level.items():
            tps = [r["texts_per_s"] for r in runs]
            ratio = [t / c for t, c in zip(tps, ceiling)] if ceiling else []
            print(
                f"{name:<18} {level:>4} {summary(tps):>18} {summary([r['p50_ms'] for r in runs], 1):>16} "
                f"{summary([r['p99_ms'] for r in runs], 1):>16} {summary(ceiling) if ceiling else '-':>16} "
                f"{summary(ratio, 2) if ratio else '-':>16}"
            )


def run(
    inputs: list[str],
    levels: list[int],
    rounds: int,
    measurement_ms: int,
    batch: int = 16,
    url: str | None = None,
    base: Path | None = None,
    instances: int = 1,
    in_process: bool = True,
    triton_env: dict[str, str] | None = None,
) -> dict:
    """Start a tritonserver (unless `url` is given), load bench-0..7, and measure (see `measure`)."""
    from bench.stack import bench_base, prepare_adapters
    from testkit.triton_harness import LoraClient, TritonServer, server_settings

    server = engine = None
    if url is None:
        work = REPO / "var" / "bench" / "perf_analyzer"
        work.mkdir(parents=True, exist_ok=True)
        base = bench_base(work, base)
        root = work / "models"
        prepare_adapters(root, base, ADAPTERS)
        server = TritonServer(
            work, server_settings(base, root, work / "state", **(triton_env or {})), instances=instances
        )
        server.start()
        url = server.url
    try:
        client = LoraClient(url)
        for model_id in ADAPTERS:
            client.control({"op": "load", "model_dir": model_id})
        client.close()
        if in_process and server is not None:
            import torch

            from adapter_manager import AdapterEngine

            torch.set_num_threads(os.cpu_count() or 1)
            engine = AdapterEngine(base, root, device="cpu", dtype="float32")
            for model_id in ADAPTERS:
                engine.load(model_id)
        figures = measure(url, inputs, levels, rounds, measurement_ms, batch, engine)
    finally:
        if server is not None:
            server.stop()
    figures["url"] = url
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running Triton (HOST:PORT); default: start one")
    parser.add_argument("--base", type=Path, help="base encoder when starting a server (default: MiniLM if installed)")
    parser.add_argument("--instances", type=int, default=1, help="CPU instances when starting a server")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--inputs", default=",".join(DEFAULT_INPUTS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--measurement-ms", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process comparison")
    args = parser.parse_args(argv)
    inputs = [name.strip() for name in args.inputs.split(",") if name.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    figures = run(
        inputs,
        levels,
        args.rounds,
        args.measurement_ms,
        args.batch,
        args.url,
        args.base,
        args.instances,
        not args.no_in_process,
    )
    print_report(
        figures,
        f"lora_classifier via perf_analyzer at {figures['url']}: {args.batch}-text requests, "
        f"{args.rounds} round(s), {args.measurement_ms} ms windows; median [min-max] where rounds > 1",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
