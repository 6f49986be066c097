"""Listing and query with thousands of training outputs: latency through the whole stack, and what keeping
the index current costs.

    .venv/bin/python -m bench.listing [--sizes 1000,10000,50000] [--rounds 3] [--into docs/benchmarks.md]

For each size, a models root of `local-<uuid>` training outputs (real ones, hard links to one generated output,
so 50,000 cost little disk) is served by tritonserver and the shim (the index refreshed every 5 s, the
default). Two of them are loaded. Measured, each as the median and min-max over rounds of the per-round p50:
- `GET /inference/models` (everything), a page of 100, and `POST /inference/models/query` with 50 ids;
- in-process, in this process: building the index, and one refresh of an unchanged, settled root (the stat
  work done every MODELS_INDEX_SECONDS);
- how long a new output takes to show in the listing, and a deleted one to leave it.
Raw figures go to var/bench/listing.json.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from adapter_manager.outputs_index import TrainingOutputIndex
from bench.gpu.render import publish
from bench.revision import head_commit
from bench.stack import REPO, Stack
from testkit.conditions import wait_for
from testkit.factories import OutputSpec, clone_output, make_tiny_base, make_training_output
from testkit.measure import summary

HEADING = "## Ten thousand training outputs (bench/listing.py)"
RESULTS = REPO / "var" / "bench" / "listing.json"
REQUESTS_PER_ROUND = 15
QUERY_IDS = 50
INDEX_SECONDS = "5"  # MODELS_INDEX_SECONDS: the default


def output_name(i: int) -> str:
    return f"local-{uuid.UUID(int=i)}"


def models_root(work: Path, template: Path, size: int) -> Path:
    """A root of exactly `size` outputs, built once and reused."""
    root = work / f"root-{size}"
    done = root / ".complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for i in range(size):
            clone_output(template, root / output_name(i))
        done.write_text(str(size))
    for stray in root.glob("fresh-*"):  # left by an interrupted run
        shutil.rmtree(stray)
    return root


def p50_ms(call: Callable[[], requests.Response]) -> float:
    durations = []
    for _ in range(REQUESTS_PER_ROUND):
        started = time.perf_counter()
        response = call()
        durations.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(durations) * 1000


def show_latency(api: str, template: Path, root: Path) -> tuple[float, float]:
    """Seconds until a new output is listed, then until it has left the listing once deleted."""
    name = f"fresh-{uuid.uuid4().hex[:8]}"

    def listed() -> bool:
        answer = requests.get(f"{api}/inference/models", params={"status": "unloaded"}, timeout=60).json()
        return any(m["model_id"] == name for m in answer["models"])

    started = time.monotonic()
    clone_output(template, root / name)
    wait_for(listed, 60, f"{name} listed", interval=0.2)
    appeared = time.monotonic() - started
    started = time.monotonic()
    shutil.rmtree(root / name)
    wait_for(lambda: not listed(), 60, f"{name} gone", interval=0.2)
    return appeared, time.monotonic() - started


def measure_size(work: Path, base: Path, template: Path, size: int, rounds: int) -> dict[str, Any]:
    root = models_root(work, template, size)
    index = TrainingOutputIndex(root)
    started = time.perf_counter()
    index.model_ids()
    build_s = time.perf_counter() - started

    def settled() -> bool:  # directories modified in the last 2 s are listed again: wait for the steady state
        index.refresh()
        return index.listed_directories == 0

    wait_for(settled, 60, "the index settled")
    refresh_s = []
    for _ in range(5):
        index.refresh()
        refresh_s.append(index.last_refresh_s)
    figures: dict[str, Any] = {
        "size": size,
        "index_build_s": build_s,
        "index_refresh_ms": [s * 1000 for s in refresh_s],
        **{key: [] for key in ("list_ms", "page_ms", "query_ms", "appear_s", "disappear_s")},
    }
    with Stack(work / f"stack-{size}", base, root, triton_env={"MODELS_INDEX_SECONDS": INDEX_SECONDS}) as stack:
        api = stack.api
        wait_for(
            lambda: requests.get(f"{api}/inference/models", params={"limit": "0"}, timeout=60).json()["total"] == size,
            120,
            f"all {size} outputs indexed",
        )
        stack.load([output_name(0), output_name(1)])
        rng = random.Random(size)
        for _ in range(rounds):
            wanted = [output_name(0)] + [output_name(rng.randrange(size)) for _ in range(QUERY_IDS - 2)] + ["nope"]
            figures["list_ms"].append(p50_ms(lambda: requests.get(f"{api}/inference/models", timeout=60)))
            figures["page_ms"].append(
                p50_ms(lambda: requests.get(f"{api}/inference/models", params={"limit": "100"}, timeout=60))
            )
            query = {"model_ids": wanted}
            figures["query_ms"].append(
                p50_ms(lambda q=query: requests.post(f"{api}/inference/models/query", json=q, timeout=60))
            )
            appeared, disappeared = show_latency(api, template, root)
            figures["appear_s"].append(appeared)
            figures["disappear_s"].append(disappeared)
        listing = requests.get(f"{api}/inference/models", timeout=60)
        figures["list_bytes"] = len(listing.content)
        assert listing.json()["total"] == size and listing.json()["loaded_count"] == 2
    return figures


def run(work: Path, sizes: list[int], rounds: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    base = make_tiny_base(work / "tiny-base")  # the listing does not depend on the encoder
    template = work / "template" / "job"
    if not template.exists():
        make_training_output(work / "template", "job", base, OutputSpec(seed=1))
    return {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "commit": head_commit() or "unknown",
        "rounds": rounds,
        "sizes": [measure_size(work, base, template, size, rounds) for size in sizes],
    }


def listing_section(figures: dict[str, Any]) -> list[str]:
    lines = [
        HEADING,
        "",
        f"Measured {figures['when']} at commit {figures.get('commit', 'unknown')}; median [min-max] over "
        f"{figures['rounds']} rounds of each round's p50 over "
        f"{REQUESTS_PER_ROUND} requests. The root holds `local-<uuid>` training outputs; two are loaded. "
        f"Targets at 10,000: listing p50 <= 200 ms, query of {QUERY_IDS} ids p50 <= 30 ms, new and deleted "
        "outputs shown within 10 s. The index is refreshed every 5 s (`MODELS_INDEX_SECONDS`).",
        "",
        "| outputs | `GET /models` (all) | body | `GET /models?limit=100` | query, 50 ids | new output listed after |"
        " deleted output gone after | index build (once) | index refresh (every 5 s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in figures["sizes"]:
        lines.append(
            f"| {row['size']:,} | {summary(row['list_ms'])} ms | {row['list_bytes'] / 1e6:.1f} MB | "
            f"{summary(row['page_ms'], 1)} ms | {summary(row['query_ms'], 1)} ms | {summary(row['appear_s'], 1)} s | "
            f"{summary(row['disappear_s'], 1)} s | {row['index_build_s']:.2f} s | "
            f"{summary(row['index_refresh_ms'])} ms |"
        )
    lines += [
        "",
        "Before the index (commit 53b9871, same machine), each listing walked the root and checked every output: "
        "at 10,000 outputs about 7 s in-process, and a query cost as much as a listing.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated numbers of outputs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "listing")
    parser.add_argument("--into", type=Path, help="a benchmarks page whose listing section to replace")
    args = parser.parse_args(argv)
    figures = run(args.work, [int(s) for s in args.sizes.split(",")], args.rounds)
    publish(listing_section(figures), HEADING, args.into, RESULTS, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
