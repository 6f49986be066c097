"""Where a lone request's time goes: one client sending one short text at a time, layer by layer, same run.

    .venv/bin/python -m bench.lone [--rounds 3] [--seconds 6] [--into docs/benchmarks.md]

The stack is `make serve`'s defaults (2 CPU instances x 1 torch thread), 8 adapters loaded. Each round measures,
one after another, the p50 (or Triton's mean per request) of:
- in-process `AdapterEngine.classify` at batch 1, back to back, on 1 torch thread (what each instance uses) and
  on every core (bench/mixed.py's baseline, the one the ratio is against);
- the same on every core with the processor idle for 5 ms between calls, as it is between a lone client's
  requests: what idling alone costs the forward;
- Triton's own time per request from its statistics: the queue, and compute_infer (the backend stub's IPC,
  parsing, tokenizing, the forward, the heads, the result tensors and the metric calls);
- the shim's `TritonGateway.predict` called in this process: Triton's HTTP front with binary tensors and
  the shim's socket client (api_shim/infer_wire.py), without gunicorn or Flask;
- Triton asked directly over HTTP/JSON (bench/loadgen.py's TRITON protocol);
- the shim's predict (bench/loadgen.py, the load generator of every other benchmark): the figure of issue 14's
  deliver 2;
- the shim's no-op `GET /api/v1/health/live`: gunicorn, Flask and the client on loopback;
- in-process and through the shim again, in alternating blocks of 20 calls (bench.loadgen.lone_pair, as
  bench/mixed.py measures its figure), so that both see the machine at the same speed.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stack import REPO, Stack, in_process_engine  # sets up the HF environment

import psutil
import requests
import torch

from api_shim.gateway import TritonGateway
from bench.e2e import ADAPTERS
from bench.gpu.render import publish
from bench.revision import head_commit
from bench.loadgen import TRITON, lone_pair, run_load
from bench.mixed import ratio
from lora_core.control_token import RESTRICTED_API_HEADER
from testkit.measure import summary
from testkit.texts import short_texts

HEADING = "## Where a lone request's time goes (bench/lone.py)"
RESULTS = REPO / "var" / "bench" / "lone.json"
MAX_LENGTH = 256
CALLS = 200  # per in-process or in-process-client layer and round
WARMUP = 20
IDLE_GAP_S = 0.005

LAYERS = (
    ("engine_1", "in-process `AdapterEngine.classify`, 1 torch thread (p50)"),
    ("engine_all", "in-process, every core: **the baseline** (p50)"),
    ("engine_idle", "in-process, every core, idle 5 ms between calls (p50)"),
    ("triton_queue", "Triton's queue (mean per request)"),
    ("triton_infer", "Triton's compute_infer: the stub's IPC, tokenizing, forward, heads, result, metrics (mean)"),
    ("gateway", "the shim's TritonGateway.predict in-process: Triton's HTTP front, binary tensors (p50)"),
    ("triton_json", "Triton asked directly, HTTP/JSON (p50)"),
    ("shim", "**through the shim** (p50)"),
    ("shim_noop", "the shim's no-op, `GET /api/v1/health/live` (p50)"),
    ("paired_engine", "in alternating blocks of 20 calls: in-process, every core (p50)"),
    ("paired_shim", "in alternating blocks of 20 calls: through the shim (p50)"),
)


def p50_ms(call: Callable[[int], object], calls: int = CALLS, gap_s: float = 0.0) -> float:
    for i in range(WARMUP):
        call(i)
    durations = []
    for i in range(calls):
        if gap_s:
            time.sleep(gap_s)
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
    return (after[phase][1] - before[phase][1]) / max(1, count) / 1000000


def noop_call(stack: Stack) -> Callable[[int], None]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.shim.port, timeout=60)

    def call(_: int) -> None:
        connection.request("GET", "/api/v1/health/live")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"health/live answered {response.status}")

    return call


def measure(work: Path, rounds: int, seconds: float) -> dict[str, Any]:
    base, root, engine = in_process_engine(work, ADAPTERS, max_length=MAX_LENGTH)
    texts = short_texts(64, seed=2)
    cores = psutil.cpu_count() or 1
    figures: dict[str, list[float]] = {key: [] for key, _ in LAYERS}

    def engine_call(i: int) -> object:
        return engine.classify([texts[i % len(texts)]], [ADAPTERS[0]])

    with Stack(work / "stack", base, root, instances="auto") as stack:
        stack.load(ADAPTERS, max_length=MAX_LENGTH)
        gateway = TritonGateway(stack.triton.url)

        def gateway_call(i: int) -> object:
            return gateway.predict([([texts[i % len(texts)]], [ADAPTERS[0]])])

        triton_base = f"http://{stack.triton.url}"
        run_load(stack.predict_url, ADAPTERS[:1], texts, 1, 1, seconds=1, warmup=1)  # first contact
        for round_ in range(rounds):
            torch.set_num_threads(1)
            figures["engine_1"].append(p50_ms(engine_call))
            torch.set_num_threads(cores)
            figures["engine_all"].append(p50_ms(engine_call))
            figures["engine_idle"].append(p50_ms(engine_call, gap_s=IDLE_GAP_S))
            torch.set_num_threads(1)  # the client side of the service's runs stays light
            before = triton_times(stack)
            figures["shim"].append(run_load(stack.predict_url, ADAPTERS[:1], texts, 1, 1, seconds=seconds).p50_ms)
            after = triton_times(stack)
            figures["triton_queue"].append(per_request_ms(before, after, "queue"))
            figures["triton_infer"].append(per_request_ms(before, after, "compute_infer"))
            figures["gateway"].append(p50_ms(gateway_call))
            lone_json = run_load(triton_base, ADAPTERS[:1], texts, 1, 1, seconds=seconds, protocol=TRITON)
            figures["triton_json"].append(lone_json.p50_ms)
            figures["shim_noop"].append(p50_ms(noop_call(stack)))
            torch.set_num_threads(cores)
            pair = lone_pair(lambda text: engine.classify([text], [ADAPTERS[0]]), stack.predict_url, ADAPTERS[0], texts)
            figures["paired_engine"].append(statistics.median(pair.in_process_ms))
            figures["paired_shim"].append(statistics.median(pair.served_ms))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in figures.items()), flush=True)
    when = time.strftime("%Y-%m-%d %H:%M")
    return {"when": when, "commit": head_commit() or "unknown", "rounds": rounds, "cores": cores, "figures": figures}


def lone_section(result: dict[str, Any]) -> list[str]:
    f = result["figures"]
    lines = [
        HEADING,
        "",
        f"Measured {result['when']} at commit {result.get('commit', 'unknown')} on this machine "
        f"({result['cores']} cores, the client on them too), "
        f"`.venv/bin/python -m bench.lone --into docs/benchmarks.md`: median [min-max] over {result['rounds']} rounds. "
        "One client sends one short text at a time to one adapter; `make serve`'s defaults (2 CPU instances x "
        "1 torch thread), 8 adapters loaded. A diagnostic: the figure of record is bench/mixed.py's.",
        "",
        "| layer | ms |",
        "|---|---|",
    ]
    lines += [f"| {label} | {summary(f[key], 1)} |" for key, label in LAYERS]
    lines += [
        f"| **through the shim / the baseline** | **{summary(ratio(f, 'shim', 'engine_all'), 2)}** |",
        f"| in alternating blocks: through the shim / in-process | "
        f"**{summary(ratio(f, 'paired_shim', 'paired_engine'), 2)}** |",
        f"| Triton directly (JSON) / the baseline | {summary(ratio(f, 'triton_json', 'engine_all'), 2)} |",
        f"| idle 5 ms between calls / back to back, in-process | {summary(ratio(f, 'engine_idle', 'engine_all'), 2)} |",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="each load-generator layer, per round")
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "lone")
    parser.add_argument("--into", type=Path, help="a benchmarks page whose section to replace")
    args = parser.parse_args(argv)
    result = measure(args.work, args.rounds, args.seconds)
    publish(lone_section(result), HEADING, args.into, RESULTS, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
