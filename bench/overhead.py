"""The serving path's CPU per request, process class by process class, against the engine's own CPU per text.

    .venv/bin/python -m bench.overhead [--rounds 3] [--seconds 8] [--into docs/benchmarks.md]

On a GPU node the forward costs little next to the Python around it, so what decides throughput is the CPU that
the shim, tritonserver and the backend stubs spend per request. This measures it on two encoders:

- **tiny**: 2 layers, hidden 64, MiniLM's tokenizer; its forward costs little, as a GPU's does;
- **demo**: MiniLM (all-MiniLM-L6-v2, `make demo-base`).

Each is served by a stack with `make serve`'s defaults (Triton instances and gunicorn workers as make serve
sets them), 8 real PEFT adapters loaded, 1-text requests of short texts (max_length 128), and driven:

- **lone**: one client, one request at a time;
- **32 clients**: closed-loop, over 2 client processes (bench/multiclient.py).

The CPU time (user + system) of every process of the service is read from /proc at the start and the end of
the measured window and divided by the requests answered in it, per class: the shim (gunicorn's master and
workers), tritonserver, the Python-backend stubs. The load generator's own CPU is reported beside it and never
counted as the service's. The baseline is the same AdapterEngine in this process, on one torch thread (as each
instance runs), its CPU per text at batch 1 and batch 16, measured in the same round.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.stack import REPO, Stack, default_base, prepare_adapters  # sets up the HF environment

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from adapter_manager import AdapterEngine
from bench.e2e import ADAPTERS
from bench.floors import BareServer, noop_stack, stack_roots, tokenizer_cpu_ms, triton_roots
from bench.gpu.render import publish
from bench.revision import head_commit
from bench.multiclient import START_DELAY_S, MultiResult, run_processes
from bench.process_cpu import CLASSES, cpu_by_process, cpu_delta
from testkit.measure import summary
from testkit.texts import short_texts

HEADING = "## CPU per request on the serving path (bench/overhead.py)"
RESULTS = REPO / "var" / "bench" / "overhead.json"
MAX_LENGTH = 128
LOADS = {"lone": (1, 1), "32 clients": (32, 2)}  # name: (clients, client processes)
ENGINE_CALLS = {1: 400, 16: 60}
WARMUP_S = 2.0  # the clients' warm-up before each measured window  # in-process calls per batch size and round


def make_tiny_encoder(directory: Path, tokenizer_from: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A BERT of `layers` x `hidden` with the tokenizer (and vocabulary) of `tokenizer_from`."""
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_from))
    tokenizer.save_pretrained(str(directory))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        intermediate_size=hidden * 4,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(directory))
    return directory


def served(
    url: str, roots: list[int], texts: list[str], clients: int, processes: int, seconds: float, protocol: str = "shim"
) -> dict[str, Any]:
    """CPU per answered request of each class of the processes under `roots`, and the client's, over one
    measured window."""
    readings: list[dict[int, tuple[str, float]]] = []
    result_box: list[MultiResult] = []

    start_at = time.time() + START_DELAY_S
    window_start = start_at + WARMUP_S

    def drive() -> None:
        result_box.append(
            run_processes(url, ADAPTERS, texts, 1, clients, seconds, processes, WARMUP_S, protocol, start_at)
        )

    driver = threading.Thread(target=drive)
    driver.start()
    time.sleep(max(0.0, window_start - time.time()))
    readings.append(cpu_by_process(roots))
    time.sleep(max(0.0, window_start + seconds - time.time()))
    readings.append(cpu_by_process(roots))
    driver.join()
    result = result_box[0]
    load = result.load
    answered = load.statuses.get(200, 0)
    failures = sum(n for s, n in load.statuses.items() if s != 200) + load.malformed
    if failures or not answered:
        raise RuntimeError(f"{clients} clients: {dict(load.statuses)}, {load.malformed} malformed")
    spent = cpu_delta(*readings)
    per_request = {kind: spent[kind] / answered * 1000 for kind in CLASSES}
    per_request["service"] = sum(spent.values()) / answered * 1000
    per_request["client"] = result.client_cpu_s / answered * 1000
    return {
        "cpu_ms": per_request,
        "requests_per_s": answered / seconds,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
    }


def engine_cpu_per_text(engine: AdapterEngine, texts: list[str], batch: int) -> float:
    """ms of this process's CPU per text, `AdapterEngine.classify` at `batch` texts, one torch thread."""
    calls = ENGINE_CALLS[batch]
    batches = [
        ([texts[(i * batch + j) % len(texts)] for j in range(batch)], [ADAPTERS[(i + j) % 8] for j in range(batch)])
        for i in range(calls)
    ]
    engine.classify(*batches[0])
    started = time.process_time()
    for chunk, ids in batches:
        engine.classify(chunk, ids)
    return (time.process_time() - started) / (calls * batch) * 1000


def measure_base(work: Path, name: str, base: Path, rounds: int, seconds: float) -> dict[str, Any]:
    root = work / f"models-{name}"
    prepare_adapters(root, base, ADAPTERS)
    texts = short_texts(256, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = AdapterEngine(base, root, device="cpu", dtype="float32")
    for model_id in ADAPTERS:
        engine.load(model_id, MAX_LENGTH)
    figures: dict[str, list] = {"engine_1": [], "engine_16": [], **{load: [] for load in LOADS}}
    try:
        with Stack(work / f"stack-{name}", base, root, instances="auto") as stack:
            stack.load(ADAPTERS, MAX_LENGTH)
            for round_ in range(rounds):
                figures["engine_1"].append(engine_cpu_per_text(engine, texts, 1))
                figures["engine_16"].append(engine_cpu_per_text(engine, texts, 16))
                for load, (clients, processes) in LOADS.items():
                    run = served(stack.predict_url, stack_roots(stack), texts, clients, processes, seconds)
                    figures[load].append(run)
                print(f"{name} round {round_ + 1}: {brief(figures)}", flush=True)
    finally:
        torch.set_num_threads(threads)
    return figures


def brief(figures: dict[str, list]) -> str:
    parts = [f"engine {figures['engine_1'][-1]:.3f}/{figures['engine_16'][-1]:.3f} ms per text (batch 1/16)"]
    for load in LOADS:
        run = figures[load][-1]
        cpu = run["cpu_ms"]
        parts.append(
            f"{load}: {run['requests_per_s']:.0f} req/s, service {cpu['service']:.2f} ms CPU per request "
            f"(shim {cpu['shim']:.2f}, triton {cpu['tritonserver']:.2f}, stubs {cpu['stubs']:.2f}), "
            f"client {cpu['client']:.2f}"
        )
    return "; ".join(parts)


FLOORS = ("bare gthread", "bare Flask", "no-op model, Triton direct", "no-op model, through the shim")


def measure_floors(work: Path, base: Path, rounds: int, seconds: float) -> dict[str, Any]:
    """Each layer's floor (bench/floors.py) under the same loads, and the tokenizer's CPU per text."""
    texts = short_texts(256, seed=3)
    figures: dict[str, Any] = {name: {load: [] for load in LOADS} for name in FLOORS}
    figures["tokenizer"] = []
    with (
        BareServer(work, "bench.floor_apps:bare_wsgi") as wsgi,
        BareServer(work, "bench.floor_apps:bare_flask") as flask_app,
        noop_stack(work / "noop", base, work / "models-tiny") as noop,
    ):
        targets = {
            "bare gthread": (wsgi.predict_url, wsgi.roots(), "shim"),
            "bare Flask": (flask_app.predict_url, flask_app.roots(), "shim"),
            "no-op model, Triton direct": (f"http://{noop.triton.url}", triton_roots(noop), "triton"),
            "no-op model, through the shim": (noop.predict_url, stack_roots(noop), "shim"),
        }
        for round_ in range(rounds):
            figures["tokenizer"].append(tokenizer_cpu_ms(base, texts, MAX_LENGTH))
            for name, (url, roots, protocol) in targets.items():
                for load, (clients, processes) in LOADS.items():
                    figures[name][load].append(served(url, roots, texts, clients, processes, seconds, protocol))
            cells = [f"{n} {figures[n]['32 clients'][-1]['cpu_ms']['service']:.2f}" for n in FLOORS]
            print(f"floors round {round_ + 1}: tokenizer {figures['tokenizer'][-1]:.3f} ms; 32 clients: {cells}")
    return figures


def measure(work: Path, rounds: int, seconds: float, bases: list[str]) -> dict[str, Any]:
    demo = default_base()
    if demo is None:
        raise SystemExit("bench.overhead needs MiniLM (make demo-base) for its tokenizer and the demo figures")
    paths = {"tiny": make_tiny_encoder(work / "tiny-base", demo), "demo": demo}
    return {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "commit": head_commit() or "unknown",
        "rounds": rounds,
        "seconds": seconds,
        "bases": {name: measure_base(work, name, paths[name], rounds, seconds) for name in bases},
        "floors": measure_floors(work, paths["tiny"], rounds, seconds),
    }


def _values(runs: list[dict], *keys: str) -> list[float]:
    values = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        values.append(value)
    return values


def overhead_section(result: dict[str, Any]) -> list[str]:
    lines = [
        HEADING,
        "",
        f"Measured {result.get('when', '?')} at commit {result.get('commit', '?')} on this machine (2 cores, shared "
        "with the client processes). "
        f"{result['rounds']} rounds of {result['seconds']:.0f} s, `make serve`'s defaults, 8 adapters, 1-text "
        f"requests of short texts (max_length {MAX_LENGTH}). CPU milliseconds (user + system, from /proc) per "
        "answered request; median [min-max]. The in-process engine runs one torch thread, as each instance does.",
        "",
        "| encoder | load | requests/s | p50 ms | service | shim | tritonserver | stubs | other "
        "| service / in-process at batch 16 | client (not counted) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in result["bases"].items():
        per_text_16 = figures["engine_16"]
        for load in LOADS:
            runs = figures[load]
            service = _values(runs, "cpu_ms", "service")
            ratios = [s / e for s, e in zip(service, per_text_16)]
            cells = [summary(_values(runs, "cpu_ms", kind), 2) for kind in CLASSES]
            rate, p50 = summary(_values(runs, "requests_per_s")), summary(_values(runs, "p50_ms"), 1)
            lines.append(
                f"| {name} | {load} | {rate} | {p50} "
                f"| **{summary(service, 2)}** | {' | '.join(cells)} | {summary(ratios, 1)}x "
                f"| {summary(_values(runs, 'cpu_ms', 'client'), 2)} |"
            )
        lines.append(
            f"| {name} | in-process, per text | | | batch 1: {summary(figures['engine_1'], 3)}, "
            f"batch 16: {summary(per_text_16, 3)} | | | | | | |"
        )
    lines += ["", *targets_section(result["bases"].get("tiny"))]
    lines += ["", *floors_section(result["floors"])]
    rerun = f"--rounds {result['rounds']} --seconds {result['seconds']:g} --bases {','.join(result['bases'])}"
    lines += ["", f"Rerun: `.venv/bin/python -m bench.overhead {rerun} --into docs/benchmarks.md`."]
    return lines


def targets_section(tiny: dict[str, Any] | None) -> list[str]:
    """Issue 26's targets on the tiny encoder (medians), against the figures before it: 2.75 ms at 32 clients
    (shim 1.31, stubs 1.18, tritonserver 0.24; 9.8x in-process), 5.2-6.8 ms lone."""
    if tiny is None:
        return []
    crowd, lone = tiny["32 clients"], tiny["lone"]
    median = statistics.median
    service = median(_values(crowd, "cpu_ms", "service"))
    ratio = median(s / e for s, e in zip(_values(crowd, "cpu_ms", "service"), tiny["engine_16"]))
    rows = [  # name, measured, unit, bound
        ("whole path, 32 clients", service, " ms", 1.4),
        ("whole path / in-process at batch 16", ratio, "x", 5.0),
        ("stubs, 32 clients", median(_values(crowd, "cpu_ms", "stubs")), " ms", 0.6),
        ("lone request", median(_values(lone, "cpu_ms", "service")), " ms", 2.5),
    ]
    lines = ["Issue 26's targets, tiny encoder (medians):", "", "| figure | measured | target | met |"]
    lines.append("|---|---|---|---|")
    for name, value, unit, bound in rows:
        met = "yes" if value <= bound else "**no**"
        lines.append(f"| {name} | {value:.2f}{unit} | <= {bound:g}{unit} | {met} |")
    return lines


def floors_section(floors: dict[str, Any]) -> list[str]:
    lines = [
        "Floors, same clients and accounting (bench/floors.py): what a request costs each layer where it does nothing "
        "else. CPU ms per request, all the processes of the layer.",
        "",
        "| floor | lone | 32 clients |",
        "|---|---|---|",
    ]
    for name in FLOORS:
        cells = [summary(_values(floors[name][load], "cpu_ms", "service"), 2) for load in LOADS]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines.append(f"| tokenizer, one text (in-process) | {summary(floors['tokenizer'], 3)} | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--from-json", action="store_true", help=f"render the figures kept in {RESULTS.name}")
    parser.add_argument("--bases", default="tiny,demo", help="which encoders: tiny, demo or both")
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "overhead")
    parser.add_argument("--into", type=Path, help="replace this section of a Markdown file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work / "stack-tiny", ignore_errors=True)
    shutil.rmtree(args.work / "stack-demo", ignore_errors=True)
    if args.from_json:  # render figures measured before, as they were
        result = json.loads(RESULTS.read_text(encoding="utf-8"))
        publish(overhead_section(result), HEADING, args.into)
        return 0
    result = measure(args.work, args.rounds, args.seconds, args.bases.split(","))
    lines = overhead_section(result)
    publish(lines, HEADING, args.into, RESULTS, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
