"""Overload on this machine: more clients than the service can serve, with and without admission.

    .venv/bin/python -m bench.overload [--rounds 3] [--seconds 15] [--into docs/benchmarks.md]

`make serve`'s stack with its defaults, 8 adapters, short texts. Each round runs, in this order:

- the in-process reference: AdapterEngine.classify of 16-text batches over the 8 adapters, for `seconds`;
- 256 closed-loop clients sending 16-text predicts (bench/loadgen.py), while a prober sends one control
  operation (the models listing) every half second: its latency shows that control passes the predicts;
- 32 clients sending 1-text predicts, which the service must all accept.

Refused clients wait as Retry-After says before sending again. A last run repeats the 256-client load on a
second stack with admission off (ADMISSION_MAX_WAIT_S=0): what the limit buys, in the same session.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.stack import REPO, Stack, in_process_engine  # sets up the HF environment

import requests

from adapter_manager import AdapterEngine
from bench.e2e import ADAPTERS
from bench.gpu.render import publish
from bench.loadgen import LoadResult, run_load
from testkit.measure import percentile, summary
from testkit.texts import short_texts

HEADING = "## Overload (bench/overload.py)"
RESULTS = REPO / "var" / "bench" / "overload.json"
SCENARIOS = {"flood": (256, 16), "steady": (32, 1)}  # name: (clients, texts per request)


def in_process_texts_per_s(engine: AdapterEngine, texts: list[str], seconds: float) -> float:
    """16-text batches over the 8 adapters, one after another: what the hardware serves without a server."""
    done, k, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = [texts[(k * 16 + i) % len(texts)] for i in range(16)]
        engine.classify(batch, [ADAPTERS[(k + i) % len(ADAPTERS)] for i in range(len(batch))])
        done, k = done + 16, k + 1
    return done / (time.perf_counter() - started)


class ControlProber:
    """Sends GET /models every `every_s` seconds on its own thread, timing each answer."""

    def __init__(self, api: str, every_s: float = 0.5) -> None:
        self.api, self.every_s = api, every_s
        self.latencies_ms: list[float] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ControlProber:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            sent = time.perf_counter()
            try:
                status = requests.get(f"{self.api}/inference/models", timeout=60).status_code
            except requests.RequestException:
                status = 0
            self.latencies_ms.append((time.perf_counter() - sent) * 1000)
            self.statuses.append(status)


def figures_of(run: LoadResult) -> dict[str, float]:
    answered = run.statuses.get(200, 0)
    refused = run.statuses.get(429, 0)
    return {
        "texts_per_s": run.texts_per_s,
        "ok_p99_ms": run.ok_p99_ms,
        "refused_p99_ms": run.refused_p99_ms,
        "refused_share": refused / max(1, answered + refused),
        "other_failures": sum(n for s, n in run.statuses.items() if s not in (200, 429)) + run.malformed,
    }


def flood(stack: Stack, texts: list[str], seconds: float) -> tuple[LoadResult, ControlProber]:
    clients, per_request = SCENARIOS["flood"]
    with ControlProber(stack.api) as prober:
        run = run_load(stack.predict_url, ADAPTERS, texts, per_request, clients, seconds=seconds, warmup=3)
    return run, prober


def measure(work: Path, rounds: int, seconds: float) -> dict[str, Any]:
    base, root, engine = in_process_engine(work, ADAPTERS)
    texts = short_texts(512, seed=3)
    result: dict[str, Any] = {"in_process": [], "flood": [], "steady": [], "control_ms": [], "control_failures": 0}
    with Stack(work / "stack", base, root, instances="auto") as stack:
        stack.load(ADAPTERS)
        run_load(stack.predict_url, ADAPTERS, texts, 16, 8, seconds=2, warmup=1)  # first contact
        for round_ in range(rounds):
            result["in_process"].append(in_process_texts_per_s(engine, texts, seconds / 2))
            run, prober = flood(stack, texts, seconds)
            result["flood"].append(figures_of(run))
            result["control_ms"] += prober.latencies_ms
            result["control_failures"] += sum(1 for s in prober.statuses if s != 200)
            steady = run_load(stack.predict_url, ADAPTERS, texts, 1, SCENARIOS["steady"][0], seconds=seconds / 2)
            result["steady"].append(figures_of(steady))
            f, s = result["flood"][-1], result["steady"][-1]
            print(
                f"round {round_ + 1}: in-process {result['in_process'][-1]:.0f} texts/s; 256 x 16: "
                f"{f['texts_per_s']:.0f} texts/s, accepted p99 {f['ok_p99_ms']:.0f} ms, refused "
                f"{f['refused_share']:.0%} in p99 {f['refused_p99_ms']:.0f} ms, control p99 "
                f"{percentile(prober.latencies_ms, 99):.0f} ms; 32 x 1: refused {s['refused_share']:.1%}, "
                f"p99 {s['ok_p99_ms']:.0f} ms",
                flush=True,
            )
    with Stack(work / "stack-off", base, root, instances="auto", shim_env={"ADMISSION_MAX_WAIT_S": "0"}) as off:
        off.load(ADAPTERS)
        run, prober = flood(off, texts, seconds)
        result["without_admission"] = figures_of(run)
        result["without_admission_control_ms"] = prober.latencies_ms
        print(f"admission off: 256 x 16: {run.texts_per_s:.0f} texts/s, p99 {run.ok_p99_ms:.0f} ms", flush=True)
    result.update({"when": time.strftime("%Y-%m-%d %H:%M"), "rounds": rounds, "seconds": seconds})
    return result


def overload_section(result: dict[str, Any]) -> list[str]:
    flood_runs, steady_runs = result["flood"], result["steady"]

    def column(runs: list[dict], key: str, scale: float = 1.0) -> list[float]:
        return [run[key] * scale for run in runs]

    ratio = [run["texts_per_s"] / base for run, base in zip(flood_runs, result["in_process"], strict=True)]
    off = result["without_admission"]
    control = result["control_ms"]
    return [
        HEADING,
        "",
        f"Measured {result['when']} on this machine (2 cores, the load generator on them too), "
        f"`.venv/bin/python -m bench.overload --into docs/benchmarks.md`: median [min-max] over {result['rounds']} "
        f"rounds of {result['seconds']:.0f} s. `make serve`'s defaults (ADMISSION_MAX_WAIT_S=1), 8 adapters, short "
        "texts; refused clients wait as Retry-After says.",
        "",
        "| | 256 clients x 16 texts | 32 clients x 1 text | target |",
        "|---|---|---|---|",
        f"| texts/s answered | {summary(column(flood_runs, 'texts_per_s'))} | "
        f"{summary(column(steady_runs, 'texts_per_s'))} | |",
        f"| answered / in-process 16-text batches, same round | {summary(ratio, 2)} | | |",
        f"| accepted requests' p99 | {summary(column(flood_runs, 'ok_p99_ms'))} ms | "
        f"{summary(column(steady_runs, 'ok_p99_ms'))} ms | <= 2500 ms (256 x 16) |",
        f"| refused | {summary(column(flood_runs, 'refused_share', 100), 1)} % | "
        f"{summary(column(steady_runs, 'refused_share', 100), 1)} % | none (32 x 1) |",
        f"| refusals' p99 (429 with Retry-After) | {summary(column(flood_runs, 'refused_p99_ms'))} ms | | <= 100 ms |",
        f"| other failures or malformed answers | {int(sum(column(flood_runs, 'other_failures')))} | "
        f"{int(sum(column(steady_runs, 'other_failures')))} | none |",
        "",
        f"Control during the 256-client flood: the models listing every 0.5 s answered in p50 "
        f"{statistics.median(control):.0f} ms, p99 {percentile(control, 99):.0f} ms "
        f"({len(control)} probes, {result['control_failures']} failed).",
        "",
        f"The same flood with admission off (ADMISSION_MAX_WAIT_S=0, one run): {off['texts_per_s']:.0f} texts/s, "
        f"p99 {off['ok_p99_ms']:.0f} ms, nothing refused; the listing's p99 "
        f"{percentile(result['without_admission_control_ms'], 99):.0f} ms.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "overload")
    parser.add_argument("--into", type=Path, help="a benchmarks page whose section to replace")
    args = parser.parse_args(argv)
    result = measure(args.work, args.rounds, args.seconds)
    publish(overload_section(result), HEADING, args.into, RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
