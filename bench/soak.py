"""Soak: memory and correctness of the whole service (tritonserver + gunicorn shim) over time, over HTTP.

  cycles   N load -> predict -> unload cycles through the REST API, rotating over 9 adapters; the RSS of
           tritonserver (with its backend stubs) and of the gunicorn workers is sampled every K cycles
  traffic  T seconds of concurrent clients sending 1-text and 16-text predictions over 8 loaded adapters,
           while one more client loads, reloads, predicts and unloads a 9th; RSS sampled every few seconds

Every 200 answer is checked against the reference probabilities (plain transformers + peft, one text at a
time) within 1e-4, and every other answer must carry one of the contract's error codes. Reported: RSS at
start and end and its least-squares slope over the second half of each phase (warm-up skipped), requests
by outcome, mismatches, p50/p99 latency. Not part of `make test`; the exit status is 0 only when nothing
was wrong. A smoke run: `--base tiny --cycles 50 --seconds 20`.

    .venv/bin/python -m bench.soak [--base minilm|tiny] [--cycles 1000] [--seconds 600] [--out var/bench/soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
REPO = Path(__file__).resolve().parents[1]

import psutil
import requests

from adapter_manager.artifacts import read_labels
from lora_core.errors import ERRORS_BY_CODE
from bench.stack import Stack, default_base
from testkit.factories import OutputSpec, Reference, make_tiny_base, make_training_output
from testkit.measure import rss_mb
from testkit.shim_harness import ShimServer
from testkit.triton_harness import TritonServer
from testkit.texts import make_texts
from testkit.tolerance import TOLERANCE

TRAFFIC_MODELS = [f"soak-{i}" for i in range(8)]
CHURN_MODEL = "soak-churn"
CONTRACT_CODES = set(ERRORS_BY_CODE)


# ------------------------------------------------------------------------------------------- setup


def prepare(
    work: Path, base_choice: str, texts: list[str]
) -> tuple[Path, Path, dict[str, dict[str, dict[str, float]]]]:
    """The base, 9 training outputs, and the reference probabilities of every (model, text)."""
    if base_choice == "tiny":
        base = make_tiny_base(work / "base")
    else:
        base = default_base()
        if base is None or not base.exists():
            sys.exit("all-MiniLM-L6-v2 is not installed: run `make demo-base`, or pass --base tiny")
    root = work / "models"
    root.mkdir()
    reference = Reference(base)
    expected: dict[str, dict[str, dict[str, float]]] = {}
    for i, model_id in enumerate(TRAFFIC_MODELS + [CHURN_MODEL]):
        spec = OutputSpec(
            stem=f"soak{i}",
            rank=8,
            num_labels=3 + i % 4,
            seed=100 + i,
            target_modules=("query", "value") if i % 2 else ("query", "key", "value"),
        )
        out = make_training_output(root, model_id, base, spec)
        labels = read_labels(next(out.glob("*.head.pt.pkl")), "labels")
        expected[model_id] = {t: dict(zip(labels, p)) for t, p in zip(texts, reference.probabilities(out, texts))}
    return base, root, expected


def start_servers(work: Path, base: Path, root: Path, instances: int, workers: int) -> Stack:
    """tritonserver and the shim (bench.stack.Stack), started; the caller stops them (`__exit__`)."""
    shim_env = {"GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": "8", "GUNICORN_ACCESS_LOG": os.devnull}
    stack = Stack(work, base, root, instances, shim_env, {"MAX_ADAPTERS": "64"}, start_timeout=600)
    return stack.__enter__()


# ------------------------------------------------------------------------------------- measuring


class Memory:
    """RSS samples: tritonserver with its backend stubs, and the gunicorn workers (not the master)."""

    def __init__(self, triton: TritonServer, shim: ShimServer) -> None:
        self.triton = psutil.Process(triton.server.process.pid)
        self.master = psutil.Process(shim.server.process.pid)
        self.samples: list[dict[str, float]] = []

    def sample(self, at: float) -> dict[str, float]:
        workers = self.master.children()
        sample = {
            "at": at,
            "triton_mb": round(rss_mb(self.triton, with_children=True), 1),
            "stubs": len(self.triton.children()),
            "gunicorn_workers_mb": round(sum(rss_mb(w, with_children=False) for w in workers), 1),
            "gunicorn_workers": len(workers),
        }
        self.samples.append(sample)
        return sample


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den


def memory_report(samples: list[dict[str, float]], per: float) -> dict[str, Any]:
    """Start, end, and slope over the second half of the samples, in MB per `per` units of `at`."""
    second_half = samples[len(samples) // 2 :]
    report = {}
    for key in ("triton_mb", "gunicorn_workers_mb"):
        report[key] = {
            "start": samples[0][key],
            "end": samples[-1][key],
            "max": max(s[key] for s in samples),
            "slope_second_half": round(slope([(s["at"], s[key]) for s in second_half]) * per, 2),
        }
    return report


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    pick = lambda q: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"count": len(ordered), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": round(1000 * ordered[-1], 1)}


class Tally:
    """Outcomes by kind, latencies of 200s by kind, mismatches and non-contract answers (with examples)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: dict[str, int] = {}
        self.latencies: dict[str, list[float]] = {}
        self.mismatches = 0
        self.violations = 0
        self.examples: list[str] = []

    def record(
        self, kind: str, outcome: str, seconds: float, problem: str | None = None, violation: bool = False
    ) -> None:
        with self.lock:
            key = f"{kind} {outcome}"
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            if outcome == "200":
                self.latencies.setdefault(kind, []).append(seconds)
            if problem:
                if violation:
                    self.violations += 1
                else:
                    self.mismatches += 1
                if len(self.examples) < 20:
                    self.examples.append(f"{kind}: {problem}")


class Api:
    def __init__(self, base: str, expected: dict, tally: Tally) -> None:
        self.base, self.expected, self.tally = base, expected, tally
        self.session = requests.Session()

    def call(self, kind: str, path: str, body: dict, ok_codes: set[str] = frozenset()) -> dict | None:
        """POST; a 200 body is returned, anything else is tallied (and is a violation unless a contract code)."""
        started = time.perf_counter()
        try:
            response = self.session.post(f"{self.base}{path}", json=body, timeout=300)
            elapsed = time.perf_counter() - started
            answer = response.json()
        except (requests.RequestException, ValueError) as exc:
            self.session = requests.Session()
            self.tally.record(kind, type(exc).__name__, time.perf_counter() - started, f"{path}: {exc!r}"[:300], True)
            return None
        if response.status_code == 200:
            self.tally.record(kind, "200", elapsed)
            return answer
        code = answer.get("error") if isinstance(answer, dict) else None
        contract = code in CONTRACT_CODES and set(answer) == {"error", "message"} and code != "internal_error"
        problem = (
            None if contract and (code in ok_codes or not ok_codes) else f"{path} {response.status_code} {answer}"[:300]
        )
        self.tally.record(kind, f"{response.status_code} {code}", elapsed, problem, violation=not contract)
        return None

    def predict(self, kind: str, model_id: str, texts: list[str], ok_codes: set[str] = frozenset()) -> None:
        body = self.call(kind, "/inference/predict", {"model_id": model_id, "texts": texts, "top_n": 1}, ok_codes)
        if body is None:
            return
        for text, got in zip(texts, body["label_probabilities"]):
            want = self.expected[model_id][text]
            worst = max(abs(got.get(k, -1.0) - v) for k, v in want.items())
            if list(got) != list(want) or worst > TOLERANCE:
                self.tally.record(kind, "mismatch", 0.0, f"{model_id} {text!r}: max difference {worst:.2e}")
                return

    def load(self, kind: str, model_id: str, reload: bool = False) -> bool:
        return self.call(kind, "/inference/models/load", {"model_dir": model_id, "reload": reload}) is not None

    def unload(self, kind: str, model_id: str) -> bool:
        return self.call(kind, "/inference/models/unload", {"model_id": model_id}) is not None


# ---------------------------------------------------------------------------------------- phases


def run_cycles(api: Api, memory: Memory, cycles: int, every: int, texts: list[str]) -> dict[str, Any]:
    models = TRAFFIC_MODELS + [CHURN_MODEL]
    memory.sample(0)
    started = time.perf_counter()
    for i in range(cycles):
        model_id = models[i % len(models)]
        if api.load("cycle-load", model_id):
            api.predict("cycle-predict", model_id, [texts[i % len(texts)]])
            api.unload("cycle-unload", model_id)
        if (i + 1) % every == 0 or i + 1 == cycles:
            memory.sample(i + 1)
        if (i + 1) % max(every, cycles // 10) == 0 or i + 1 == cycles:
            s = memory.samples[-1]
            print(
                f"  cycle {i + 1:>6}: tritonserver {s['triton_mb']:.0f} MB ({s['stubs']} stubs), "
                f"gunicorn workers {s['gunicorn_workers_mb']:.0f} MB",
                flush=True,
            )
    seconds = time.perf_counter() - started
    return {
        "cycles": cycles,
        "seconds": round(seconds, 1),
        "samples": memory.samples[:],
        "memory_mb_per_1000_cycles": memory_report(memory.samples, 1000),
    }


def run_traffic(
    base_url: str,
    expected: dict,
    tally: Tally,
    memory: Memory,
    seconds: float,
    clients: int,
    sample_s: float,
    texts: list[str],
) -> dict[str, Any]:
    setup = Api(base_url, expected, tally)
    for model_id in TRAFFIC_MODELS:
        if not setup.load("traffic-setup", model_id):
            raise RuntimeError(f"could not load {model_id}: {tally.examples[-1:]}")
    stop = threading.Event()
    started = time.perf_counter()
    memory.samples.clear()

    def client(n: int) -> None:
        api, rng = Api(base_url, expected, tally), random.Random(n)
        while not stop.is_set():
            model_id = rng.choice(TRAFFIC_MODELS)
            if rng.random() < 0.5:
                api.predict("predict-1", model_id, [rng.choice(texts)])
            else:
                api.predict("predict-16", model_id, rng.sample(texts, 16))

    def churn() -> None:
        api, rng = Api(base_url, expected, tally), random.Random(-1)
        while not stop.is_set():
            if api.load("churn-load", CHURN_MODEL):
                api.predict("churn-predict", CHURN_MODEL, rng.sample(texts, 4))
                if rng.random() < 0.5 and api.load("churn-reload", CHURN_MODEL, reload=True):
                    api.predict("churn-predict", CHURN_MODEL, rng.sample(texts, 4))
                api.unload("churn-unload", CHURN_MODEL)
            # between cycles the 9th model is unloaded: a predict must be a clean model_not_loaded
            api.predict("churn-unloaded", CHURN_MODEL, [rng.choice(texts)], ok_codes={"model_not_loaded"})
            stop.wait(rng.uniform(1.0, 3.0))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    threads.append(threading.Thread(target=churn, daemon=True))
    for thread in threads:
        thread.start()
    next_report = 0.0
    while (elapsed := time.perf_counter() - started) < seconds:
        s = memory.sample(elapsed)
        if elapsed >= next_report:
            done = sum(v for k, v in tally.outcomes.items() if k.startswith("predict-"))
            print(
                f"  {elapsed:6.0f}s: {done} client requests, tritonserver {s['triton_mb']:.0f} MB, "
                f"gunicorn workers {s['gunicorn_workers_mb']:.0f} MB, mismatches {tally.mismatches}, "
                f"violations {tally.violations}",
                flush=True,
            )
            next_report = elapsed + max(sample_s, seconds / 20)
        stop.wait(min(sample_s, max(0.0, seconds - elapsed)))
    stop.set()
    for thread in threads:
        thread.join(timeout=300)
    memory.sample(time.perf_counter() - started)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "clients": clients,
        "samples": memory.samples[:],
        "memory_mb_per_minute": memory_report(memory.samples, 60),
    }


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", choices=("minilm", "tiny"), default="minilm")
    parser.add_argument("--cycles", type=int, default=1000, help="load/predict/unload cycles (phase a)")
    parser.add_argument("--sample-every", type=int, default=0, help="cycles between RSS samples (default: cycles/40)")
    parser.add_argument("--seconds", type=float, default=600, help="duration of the mixed traffic (phase b)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="seconds between RSS samples in phase b")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--instances", type=int, default=2, help="Triton CPU instances")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "soak.json")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, state) for inspection")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    texts = make_texts(64, 12, seed=7, vary=True)
    tally = Tally()
    print(
        f"soak: base {args.base}, {args.cycles} cycles, {args.seconds:.0f}s of traffic, {args.clients} clients, "
        f"{args.instances} Triton instances, {args.workers} gunicorn workers; work dir {work}",
        flush=True,
    )
    try:
        base, root, expected = prepare(work, args.base, texts)
        stack = start_servers(work, base, root, args.instances, args.workers)
        triton, shim = stack.triton, stack.shim
        try:
            memory = Memory(triton, shim)
            print("(a) load/predict/unload cycles", flush=True)
            every = args.sample_every or max(1, args.cycles // 40)
            cycles = (
                run_cycles(Api(shim.base, expected, tally), memory, args.cycles, every, texts) if args.cycles else None
            )
            print("(b) mixed traffic", flush=True)
            traffic = (
                run_traffic(shim.base, expected, tally, memory, args.seconds, args.clients, args.sample_seconds, texts)
                if args.seconds > 0
                else None
            )
        finally:
            stack.__exit__(None, None, None)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    latency = {kind: percentiles(values) for kind, values in sorted(tally.latencies.items())}
    summary = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "base": str(base),
        "cycles": cycles,
        "traffic": traffic,
        "outcomes": dict(sorted(tally.outcomes.items())),
        "latency": latency,
        "mismatches": tally.mismatches,
        "violations": tally.violations,
        "examples": tally.examples,
        "ok": tally.mismatches == 0 and tally.violations == 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False))

    print("\nresults")
    for name, phase, unit in (
        ("cycles", cycles, "memory_mb_per_1000_cycles"),
        ("traffic", traffic, "memory_mb_per_minute"),
    ):
        if phase is None:
            continue
        per = "MB/1000 cycles" if name == "cycles" else "MB/min"
        print(f"  {name}: {phase['seconds']}s")
        for key, label in (("triton_mb", "tritonserver+stubs"), ("gunicorn_workers_mb", "gunicorn workers")):
            m = phase[unit][key]
            print(
                f"    {label:<20} RSS {m['start']:.0f} -> {m['end']:.0f} MB (max {m['max']:.0f}), "
                f"slope over the second half {m['slope_second_half']:+.2f} {per}"
            )
    print("  outcomes:")
    for key, count in summary["outcomes"].items():
        print(f"    {key:<40} {count}")
    print("  latency of 200s (ms):")
    for kind, p in latency.items():
        print(f"    {kind:<16} n={p['count']:<7} p50 {p['p50_ms']}  p99 {p['p99_ms']}  max {p['max_ms']}")
    print(f"  mismatches {tally.mismatches}, non-contract answers {tally.violations}")
    for example in tally.examples[:5]:
        print(f"    e.g. {example}")
    print(f"  summary written to {args.out}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
