"""End to end over HTTP: the shim (gunicorn) in front of Triton, against the naive baseline, same load.

    .venv/bin/python -m bench.e2e [--rounds 3] [--seconds 8] [--lengths short,long] [--sweep 1,4,16,32,64]
                                  [--instances auto | 1,auto]

Both servers hold the same 8 adapters (r=8, query/value) on the same base; the load generator
(bench/loadgen.py) drives one at a time with closed-loop clients mixing the 8 adapters. Scenarios:
16-text requests from 8 clients, and 1-text requests from 32 clients, on short (~16 tokens) and long
(~128 tokens) texts. Rounds alternate the two servers, so the ratio is computed pair by pair. The sweep
(1-text requests, short texts) gives latency against offered load for the plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.stack import REPO, NaiveServer, Stack, bench_base, prepare_adapters

from bench.engine_throughput import TEXT_WORDS
from bench.loadgen import run_load
from testkit.measure import summary
from testkit.texts import make_texts

ADAPTERS = [f"adapter-{i}" for i in range(8)]
SCENARIOS = ((16, 8), (1, 32))  # (texts per request, clients)
SYSTEMS = ("shim", "naive")
# What `make serve` runs with no settings (scripts/run_triton.py auto_instances: one instance per core up to
# 4, the cores shared among them): 2 instances of 1 thread on 2 cores. While one runs Python (request
# handling, tokenizing), the other computes. `--instances 1` measures the old default.
INSTANCES = "auto"


def key(system: str, length: str, texts_per_request: int, clients: int) -> str:
    return f"{system}/{length}/{texts_per_request}x{clients}"


def measure(
    base: Path,
    root: Path,
    lengths: list[str],
    rounds: int,
    seconds: float,
    sweep: list[int],
    work: Path,
    shim_env: dict[str, str] | None = None,
    instances: int | str = INSTANCES,
) -> dict[str, list[dict]]:
    """Every scenario for both systems, `rounds` times; then the sweep once. Values are LoadResult dicts."""
    texts = {length: make_texts(256, TEXT_WORDS[length], seed=1) for length in lengths}
    results: dict[str, list[dict]] = {}
    with (
        Stack(work / "stack", base, root, instances=instances, shim_env=shim_env) as stack,
        NaiveServer(work, base, root, ADAPTERS) as naive,
    ):
        stack.load(ADAPTERS)
        urls = {"shim": stack.predict_url, "naive": naive.predict_url}
        for system in SYSTEMS:  # first contact: kernels, connections, allocator
            run_load(urls[system], ADAPTERS, texts[lengths[0]], 16, 4, seconds=1, warmup=1)
        for _ in range(rounds):
            for length in lengths:
                for per_request, clients in SCENARIOS:
                    for system in SYSTEMS:
                        outcome = run_load(urls[system], ADAPTERS, texts[length], per_request, clients, seconds)
                        results.setdefault(key(system, length, per_request, clients), []).append(outcome.as_dict())
        for clients in sweep:
            for system in SYSTEMS:
                outcome = run_load(urls[system], ADAPTERS, texts[lengths[0]], 1, clients, seconds)
                results.setdefault(f"sweep/{system}/{clients}", []).append(outcome.as_dict())
    return results


def print_report(results: dict[str, list[dict]], lengths: list[str]) -> None:
    print(
        f"{'scenario':<28} {'system':<6} {'texts/s':>16} {'p50 ms':>16} {'p99 ms':>16} {'non-200':>8} "
        f"{'shim/naive':>16}"
    )
    for length in lengths:
        for per_request, clients in SCENARIOS:
            naive = results[key("naive", length, per_request, clients)]
            for system in SYSTEMS:
                runs = results[key(system, length, per_request, clients)]
                tps = [r["texts_per_s"] for r in runs]
                ratio = (
                    summary([a["texts_per_s"] / b["texts_per_s"] for a, b in zip(runs, naive)], 2)
                    if system == "shim"
                    else ""
                )
                failed = sum(n for r in runs for code, n in r["statuses"].items() if code != "200") + sum(
                    r["malformed"] for r in runs
                )
                print(
                    f"{length + f', {per_request}-text x {clients}':<28} {system:<6} {summary(tps):>16} "
                    f"{summary([r['p50_ms'] for r in runs]):>16} {summary([r['p99_ms'] for r in runs]):>16} "
                    f"{failed:>8} {ratio:>16}"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per run (after 2 s warm-up)")
    parser.add_argument("--lengths", default="short,long")
    parser.add_argument("--sweep", default="1,4,16,32,64", help="client counts for the 1-text sweep ('' to skip)")
    parser.add_argument(
        "--instances",
        default=INSTANCES,
        help="Triton CPU instances, or auto (make serve's default); several, comma-separated, "
        "are measured one after the other, each against its own naive run",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = REPO / "var" / "bench" / "e2e"
    base = bench_base(work, args.base)
    prepare_adapters(work / "models", base, ADAPTERS)
    lengths = [x for x in args.lengths.split(",") if x]
    sweep = [int(x) for x in args.sweep.split(",") if x]
    everything = {}
    for instances in args.instances.split(","):
        results = measure(base, work / "models", lengths, args.rounds, args.seconds, sweep, work, instances=instances)
        print(f"\nTriton instances: {instances}")
        print_report(results, lengths)
        everything[instances] = results
    if args.json:
        args.json.write_text(json.dumps(everything if "," in args.instances else results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
