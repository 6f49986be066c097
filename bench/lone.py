"""Where a lone request's time goes: one client sending one short text at a time, layer by layer, same run.

    .venv/bin/python -m bench.lone [--rounds 3] [--requests 200]

Each round measures, one after another, the p50 of:
- in-process `AdapterEngine.classify` at batch 1 with the service's adapters loaded, on 1 torch thread (what
  each of `make serve`'s 2 CPU instances uses) and on every core (bench/mixed.py's baseline);
- Triton's own time per request (its statistics: queue, compute_infer; compute_infer includes the backend
  stub's IPC, tokenizing and building the result);
- Triton asked directly over HTTP/JSON, as a client that skips the shim would;
- the shim's predict, the figure of issue 14's deliver 2;
- the shim's no-op (`GET /api/v1/health/live`): gunicorn, Flask and the client on loopback.
It writes nothing to docs/: it is a diagnostic (issue 14, deliver 2), not a figure of record.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path

from bench.stack import REPO, Stack, in_process_engine  # sets up the HF environment

import psutil
import requests
import torch

from bench.e2e import ADAPTERS
from lora_core.control_token import RESTRICTED_API_HEADER
from testkit.measure import summary
from testkit.texts import short_texts

MAX_LENGTH = 256
WARMUP = 20


def p50_ms(call: Callable[[int], object], requests_: int) -> float:
    for i in range(WARMUP):
        call(i)
    durations = []
    for i in range(requests_):
        started = time.perf_counter()
        call(i)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def triton_times(stack: Stack) -> dict[str, tuple[int, int]]:
    """(count, ns) per phase of Triton's statistics for lora_classifier."""
    headers = {RESTRICTED_API_HEADER: stack.triton.control_token}
    url = f"http://{stack.triton.url}/v2/models/lora_classifier/stats"
    phases = requests.get(url, headers=headers, timeout=10).json()["model_stats"][0]["inference_stats"]
    return {name: (int(p["count"]), int(p["ns"])) for name, p in phases.items()}


def per_request_ms(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], phase: str) -> float:
    count = after[phase][0] - before[phase][0]
    return (after[phase][1] - before[phase][1]) / max(1, count) / 1e6


def measure(work: Path, rounds: int, requests_: int) -> dict[str, list[float]]:
    base, root, engine = in_process_engine(work, ADAPTERS, max_length=MAX_LENGTH)
    texts = short_texts(64, seed=2)
    cores = psutil.cpu_count() or 1
    figures: dict[str, list[float]] = {
        k: [] for k in ("engine_1", "engine_all", "triton_queue", "triton_infer", "triton_http", "shim", "shim_noop")
    }
    session = requests.Session()
    with Stack(work / "stack", base, root, instances="auto") as stack:
        stack.load(ADAPTERS, max_length=MAX_LENGTH)
        infer_url = f"http://{stack.triton.url}/v2/models/lora_classifier/infer"
        live_url = f"{stack.api}/health/live"

        def engine_call(i: int) -> object:
            return engine.classify([texts[i % len(texts)]], [ADAPTERS[0]])

        def shim_call(i: int) -> None:
            body = {"model_id": ADAPTERS[0], "texts": [texts[i % len(texts)]]}
            session.post(stack.predict_url, json=body, timeout=60).raise_for_status()

        def triton_call(i: int) -> None:
            body: dict[str, Any] = {
                "inputs": [
                    {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [texts[i % len(texts)]]},
                    {"name": "MODEL_ID", "shape": [1, 1], "datatype": "BYTES", "data": [ADAPTERS[0]]},
                ]
            }
            session.post(infer_url, json=body, timeout=60).raise_for_status()

        def noop_call(_: int) -> None:
            session.get(live_url, timeout=60).raise_for_status()

        for round_ in range(rounds):
            torch.set_num_threads(1)
            figures["engine_1"].append(p50_ms(engine_call, requests_))
            torch.set_num_threads(cores)
            figures["engine_all"].append(p50_ms(engine_call, requests_))
            torch.set_num_threads(1)  # the client side of the service's runs stays light
            before = triton_times(stack)
            figures["shim"].append(p50_ms(shim_call, requests_))
            after = triton_times(stack)
            figures["triton_queue"].append(per_request_ms(before, after, "queue"))
            figures["triton_infer"].append(per_request_ms(before, after, "compute_infer"))
            figures["triton_http"].append(p50_ms(triton_call, requests_))
            figures["shim_noop"].append(p50_ms(noop_call, requests_))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in figures.items()), flush=True)
    return figures


def report(figures: dict[str, list[float]], cores: int) -> str:
    ratio = [shim / base for shim, base in zip(figures["shim"], figures["engine_all"], strict=True)]
    rows = [
        ("in-process `AdapterEngine.classify`, 1 thread", figures["engine_1"]),
        (f"in-process, {cores} threads (bench/mixed.py's baseline)", figures["engine_all"]),
        ("Triton's queue, per request (mean)", figures["triton_queue"]),
        ("Triton's compute_infer, per request (mean; the stub's forward, IPC, tokenizing)", figures["triton_infer"]),
        ("Triton directly, HTTP/JSON (p50)", figures["triton_http"]),
        ("through the shim (p50)", figures["shim"]),
        ("the shim's no-op, `GET /health/live` (p50)", figures["shim_noop"]),
    ]
    lines = ["| layer | ms, median [min-max] over rounds |", "|---|---|"]
    lines += [f"| {what} | {summary(values, 1)} |" for what, values in rows]
    lines.append(f"| **shim / in-process on every core** | **{summary(ratio, 2)}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="requests per layer and round")
    args = parser.parse_args(argv)
    figures = measure(REPO / "var" / "bench" / "lone", args.rounds, args.requests)
    print(report(figures, psutil.cpu_count() or 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
