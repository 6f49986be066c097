"""`make bench`: every benchmark in one run, then docs/benchmarks.md and its plots.

    .venv/bin/python -m bench.report [--quick] [--out docs]

Parts, in order (each also runs alone; see its module):
  engine      bench/engine_throughput.py   in-process: bare, one adapter, 8 mixed, 64 mixed, PEFT's paths
  triton      bench/perf_analyzer/run.py   Triton direct, perf_analyzer over a concurrency sweep
  e2e         bench/e2e.py                 the shim under load vs the naive Flask + PeftModel baseline
  adapters    bench/adapters.py            load/unload latency, memory and throughput with 1000 resident
Raw figures go to var/bench/results.json; the table and plots to docs/. Every figure is the median and
min-max over rounds; every ratio is computed pair by pair within a round, on this machine, in this run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from bench import cluster, e2e, engine_throughput, etcd_check, listing, lone, mixed, overload
from bench.revision import head_commit
from bench.gpu import render as gpu_render
from bench.perf_analyzer import run as perf_run
from bench.stack import REPO, bench_base, prepare_adapters
from testkit.measure import percentile, summary
from testkit.texts import make_texts

PERF_INPUTS = ["one_adapter_short", "mixed8_short", "one_adapter_long", "mixed8_long"]


def run_all(quick: bool) -> dict:
    """Measure every part; the figures as one JSON-able dict."""
    import psutil
    import torch

    rounds, seconds = (2, 1.0) if quick else (8, 1.5)
    work = REPO / "var" / "bench"
    base = bench_base(work)
    figures: dict = {
        "when": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": head_commit() or "unknown",
        "machine": (
            f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}"
        ),
        "base": base.name if base.name != "model" else base.parent.name,
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
    }
    started = time.monotonic()

    engine_root = work / "engine" / "models"
    ids = [f"adapter-{i}" for i in range(64)]
    prepare_adapters(engine_root, base, ids)
    figures["engine"] = {}
    for length, words in engine_throughput.TEXT_WORDS.items():
        texts = make_texts(16, words)
        figures["engine"][length] = engine_throughput.measure(base, engine_root, ids, texts, rounds, seconds, wide=64)
        print(f"[{time.monotonic() - started:6.0f}s] engine {length} done", flush=True)

    figures["triton"] = perf_run.run(
        PERF_INPUTS,
        [1, 2, 4, 8] if not quick else [1, 4],
        rounds=3 if not quick else 1,
        measurement_ms=2000 if not quick else 1000,
        base=base,
    )
    print(f"[{time.monotonic() - started:6.0f}s] perf_analyzer done", flush=True)

    e2e_root = work / "e2e" / "models"
    prepare_adapters(e2e_root, base, e2e.ADAPTERS)
    figures["e2e"] = e2e.measure(
        base,
        e2e_root,
        ["short", "long"],
        rounds=3 if not quick else 1,
        seconds=8 if not quick else 3,
        sweep=[1, 4, 16, 32, 64] if not quick else [1, 32],
        work=work / "e2e",
    )
    print(f"[{time.monotonic() - started:6.0f}s] end to end done", flush=True)

    # In a fresh process: memory growth must not be hidden by space the earlier parts freed.
    out = work / "adapters.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.adapters",
            "--json",
            str(out),
            "--cycles",
            "100" if not quick else "20",
            "--levels",
            "1,100,1000" if not quick else "1,100",
            "--rounds",
            str(rounds),
            "--seconds",
            str(seconds / 1.5),
        ],
        check=True,
    )
    figures["adapters"] = json.loads(out.read_text())
    print(f"[{time.monotonic() - started:6.0f}s] adapters done", flush=True)
    figures["seconds"] = time.monotonic() - started
    return figures


# ------------------------------------------------------------------------------------------ report


def ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b) if y]


def targets(f: dict) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, met) for every target of issue 6, from this run's figures."""
    rows = []
    for length in ("short", "long"):
        r = ratio(f["engine"][length]["mixed-8"], f["engine"][length]["one"])
        rows.append(
            (f"in-process, 8 mixed / one adapter, {length}", summary(r, 2), ">= 0.95", statistics.median(r) >= 0.95)
        )
    for name in PERF_INPUTS:
        ceiling = f["triton"]["in_process"][name]
        runs = f["triton"]["triton"][name]["1"]
        r = ratio([x["texts_per_s"] for x in runs], ceiling)
        rows.append(
            (
                f"Triton direct / in-process, {name}, concurrency 1",
                summary(r, 2),
                ">= 0.85",
                statistics.median(r) >= 0.85,
            )
        )
    for length in ("short", "long"):
        shim, naive = f["e2e"][e2e.key("shim", length, 16, 8)], f["e2e"][e2e.key("naive", length, 16, 8)]
        r = ratio([x["texts_per_s"] for x in shim], [x["texts_per_s"] for x in naive])
        rows.append(
            (f"end to end / naive, 16-text, 8 clients, {length}", summary(r, 2), ">= 1.0", statistics.median(r) >= 1.0)
        )
        shim, naive = f["e2e"][e2e.key("shim", length, 1, 32)], f["e2e"][e2e.key("naive", length, 1, 32)]
        r = ratio([x["texts_per_s"] for x in shim], [x["texts_per_s"] for x in naive])
        # What any server could reach on this machine: the in-process ceiling against the naive server.
        bound = statistics.median(f["engine"][length]["one"]) / statistics.median(x["texts_per_s"] for x in naive)
        rows.append(
            (
                f"end to end / naive, 1-text, 32 clients, {length}",
                f"{summary(r, 2)} (in-process ceiling / naive: {bound:.2f})",
                ">= 4",
                statistics.median(r) >= 4,
            )
        )
        p99 = ratio([x["p99_ms"] for x in shim], [x["p99_ms"] for x in naive])
        rows.append(
            (
                f"p99 end to end / naive p99, 1-text, 32 clients, {length}",
                summary(p99, 2),
                "<= 1.0",
                statistics.median(p99) <= 1.0,
            )
        )
    lifecycle = f["adapters"]
    load, unload = statistics.median(lifecycle["api"]["load_ms"]), statistics.median(lifecycle["api"]["unload_ms"])
    rows.append(("adapter load p50 through the API, ms", f"{load:.1f}", "<= 50", load <= 50))
    rows.append(("adapter unload p50 through the API, ms", f"{unload:.1f}", "<= 10", unload <= 10))
    many = lifecycle["memory"][-1]
    rows.append(
        (
            f"memory growth / adapters' size, {many['adapters']} resident",
            f"{many['growth_per_adapter_size']:.2f}",
            "<= 1.3",
            many["growth_per_adapter_size"] <= 1.3,
        )
    )
    n = lifecycle["many"]
    for kind in ("one", "mixed"):
        r = ratio(lifecycle["throughput"][f"{kind}@{n}"], lifecycle["throughput"][f"{kind}@8"])
        rows.append(
            (f"throughput with {n} resident / with 8, {kind}", summary(r, 2), ">= 0.90", statistics.median(r) >= 0.9)
        )
    return rows


# What was tried to make it fast: one-off A/B runs made while building it (not remeasured by `make bench`).
LEVERS = (HERE / "levers.md").read_text(encoding="utf-8")


def write_markdown(f: dict, out: Path, plots: list[str]) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (bench/report.py) on {f['when']} at commit {f.get('commit', 'unknown')}, "
        f"{f['seconds'] / 60:.0f} min. "
        f"Machine: {f['machine']}; base encoder {f['base']}, float32, {f['torch_threads']} torch threads. "
        "Every figure is median [min-max] over the "
        "rounds; every ratio is computed pair by pair within a round, so machine noise hits both sides alike. "
        "This machine is shared: absolute figures move from run to run, ratios much less."
        + (" QUICK RUN (fewer, shorter rounds)." if f["quick"] else ""),
        "",
        "## Targets (issue 6)",
        "",
        "| what | measured | target | met |",
        "|---|---|---|---|",
        *[
            f"| {what} | {measured} | {target} | {'yes' if met else '**no**'} |"
            for what, measured, target, met in targets(f)
        ],
        "",
        "## In-process ceiling (bench/engine_throughput.py)",
        "",
        "16-text batches; `mixed-8`: rows round-robin over 8 adapters; `mixed-64`: every row on a different adapter, "
        "batches cycling through 64; PEFT: `set_adapter` (one) and `adapter_names=` (mixed).",
        "",
        "| texts/s | "
        + " | ".join(k for k in f["engine"]["short"] if k != "tokens_per_text")
        + " | 8 mixed / one | 64 mixed / one |",
        "|---|" + "---|" * (len(f["engine"]["short"]) + 1),
    ]
    for length, res in f["engine"].items():
        modes = [k for k in res if k != "tokens_per_text"]
        lines.append(
            f"| {length} (~{res['tokens_per_text'][0]:.0f} tokens) | "
            + " | ".join(summary(res[m]) for m in modes)
            + f" | {summary(ratio(res['mixed-8'], res['one']), 2)} | {summary(ratio(res['mixed-64'], res['one']), 2)} |"
        )
    lines += [
        "",
        "## Triton direct (bench/perf_analyzer/run.py)",
        "",
        "perf_analyzer over HTTP, 16-text requests (`-b 16`), one CPU instance; in-process: the engine on the same "
        "rows, same run.",
        "",
        "| input | concurrency | texts/s | p50 ms | p99 ms | in-process texts/s | Triton / in-process |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_level in f["triton"]["triton"].items():
        ceiling = f["triton"]["in_process"][name]
        for level, runs in by_level.items():
            tps = [r["texts_per_s"] for r in runs]
            lines.append(
                f"| {name} | {level} | {summary(tps)} | {summary([r['p50_ms'] for r in runs], 1)} | "
                f"{summary([r['p99_ms'] for r in runs], 1)} | {summary(ceiling)} | {summary(ratio(tps, ceiling), 2)} |"
            )
    lines += [
        "",
        "## End to end (bench/e2e.py)",
        "",
        "Closed-loop HTTP clients (bench/loadgen.py) mixing 8 adapters; `shim`: gunicorn (2 workers x 8 threads) "
        f"in front of tritonserver ({e2e.INSTANCES} CPU instances, as `make serve` runs, dynamic batching); "
        "`naive`: bench/naive_server.py, one Flask process holding a PeftModel, `set_adapter` per request under a "
        "lock, run with a user's default OpenMP settings (the service's stubs set "
        "`OMP_WAIT_POLICY=PASSIVE`, see the levers below). non-200 counts failed and malformed answers.",
        "",
        "| scenario | system | texts/s | p50 ms | p99 ms | non-200 | shim / naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for length in ("short", "long"):
        for per_request, clients in e2e.SCENARIOS:
            naive = f["e2e"][e2e.key("naive", length, per_request, clients)]
            for system in e2e.SYSTEMS:
                runs = f["e2e"][e2e.key(system, length, per_request, clients)]
                tps = [r["texts_per_s"] for r in runs]
                failed = sum(n for r in runs for code, n in r["statuses"].items() if code != "200") + sum(
                    r["malformed"] for r in runs
                )
                versus = summary(ratio(tps, [r["texts_per_s"] for r in naive]), 2) if system == "shim" else ""
                lines.append(
                    f"| {length}, {per_request}-text, {clients} clients | {system} | {summary(tps)} | "
                    f"{summary([r['p50_ms'] for r in runs])} | {summary([r['p99_ms'] for r in runs])} | "
                    f"{failed} | {versus} |"
                )
    sweep = sorted({int(k.rsplit("/", 1)[1]) for k in f["e2e"] if k.startswith("sweep/")})
    if sweep:
        lines += [
            "",
            "Sweep, 1-text requests, short texts (one run each):",
            "",
            "| clients | shim texts/s | shim p50 / p99 ms | naive texts/s | naive p50 / p99 ms |",
            "|---|---|---|---|---|",
        ]
        for clients in sweep:
            s, n = f["e2e"][f"sweep/shim/{clients}"][0], f["e2e"][f"sweep/naive/{clients}"][0]
            lines.append(
                f"| {clients} | {s['texts_per_s']:.0f} | {s['p50_ms']:.0f} / {s['p99_ms']:.0f} | "
                f"{n['texts_per_s']:.0f} | {n['p50_ms']:.0f} / {n['p99_ms']:.0f} |"
            )
    a = f["adapters"]
    lines += [
        "",
        "## Adapters: load, unload, memory (bench/adapters.py)",
        "",
        f"{len(a['api']['load_ms'])} load-then-unload cycles of distinct adapters (r=8 on query/value, files "
        "already in "
        "the page cache). API: POST through the shim to Triton, which writes the manifest and loads into the engine.",
        "",
        "| | load p50 ms | load p99 ms | unload p50 ms | unload p99 ms |",
        "|---|---|---|---|---|",
    ]
    for where, title in (("api", "REST API (shim -> Triton)"), ("engine", "engine alone")):
        d = a[where]
        lines.append(
            f"| {title} | {statistics.median(d['load_ms']):.1f} | {percentile(d['load_ms'], 99):.1f} | "
            f"{statistics.median(d['unload_ms']):.1f} | {percentile(d['unload_ms'], 99):.1f} |"
        )
    lines += [
        "",
        f"Resident memory of one engine process (RSS; base alone, warmed up: {a['baseline_rss_mb']:.0f} MB):",
        "",
        "| adapters resident | RSS MB | growth MB | adapters' own tensors MB | growth / own size |",
        "|---|---|---|---|---|",
    ]
    for row in a["memory"]:
        lines.append(
            f"| {row['adapters']} | {row['rss_mb']:.0f} | {row['growth_mb']:.1f} | {row['adapters_mb']:.1f} | "
            f"{row['growth_per_adapter_size']:.2f} |"
        )
    n = a["many"]
    lines += [
        "",
        f"Throughput, 16-text short batches, with {n} adapters resident vs 8: "
        + "; ".join(
            f"{kind}: {summary(a['throughput'][f'{kind}@{n}'])} vs {summary(a['throughput'][f'{kind}@8'])} texts/s "
            f"({summary(ratio(a['throughput'][f'{kind}@{n}'], a['throughput'][f'{kind}@8']), 2)})"
            for kind in ("one", "mixed")
        )
        + ".",
    ]
    gpu = gpu_render.load_results()  # the last GPU run's figures (this machine has no GPU)
    lines += ["", LEVERS] + (gpu_render.gpu_section(gpu) if gpu else [])
    # bench/listing.py, mixed.py, lone.py, etcd_check.py, cluster.py and overload.py write their own sections (`make
    # bench` runs them after this page is written): kept as they are.
    previous = out.read_text(encoding="utf-8") if out.exists() else ""
    for module in (listing, mixed, lone, etcd_check, cluster, overload):
        lines += gpu_render.section_of(previous, module.HEADING)
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    lines += [
        "",
        "## Rerun",
        "",
        "```",
        "make bench            # everything above, about 50 min here; writes this page",
        ".venv/bin/python -m bench.report --quick  # a smoke run, ~6 min",
        ".venv/bin/python -m bench.stamps          # each section's commit, and the code changed since",
        "```",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")


def write_plots(f: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, length in zip(axes, ("short", "long")):
        for name, style in ((f"one_adapter_{length}", "o-"), (f"mixed8_{length}", "s-")):
            by_level = f["triton"]["triton"][name]
            levels = sorted(by_level, key=int)
            ax.plot(
                [int(x) for x in levels],
                [statistics.median(r["texts_per_s"] for r in by_level[x]) for x in levels],
                style,
                label=f"Triton, {name.split('_')[0].replace('one', 'one adapter')}",
            )
            ax.axhline(
                statistics.median(f["triton"]["in_process"][name]),
                linestyle="--",
                linewidth=1,
                color=ax.lines[-1].get_color(),
                label=f"in-process, {name.split('_')[0]}",
            )
        ax.set_title(f"perf_analyzer, 16-text requests, {length} texts")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("texts/s")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "throughput_vs_concurrency.png", dpi=110)
    plt.close(fig)
    names.append("img/throughput_vs_concurrency.png")

    sweep = sorted({int(k.rsplit("/", 1)[1]) for k in f["e2e"] if k.startswith("sweep/")})
    if sweep:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system, marker in (("shim", "o"), ("naive", "s")):
            runs = [f["e2e"][f"sweep/{system}/{c}"][0] for c in sweep]
            tps = [r["texts_per_s"] for r in runs]
            ax.plot(tps, [r["p50_ms"] for r in runs], marker + "-", label=f"{system} p50")
            ax.plot(
                tps, [r["p99_ms"] for r in runs], marker + ":", color=ax.lines[-1].get_color(), label=f"{system} p99"
            )
            for c, x, y in zip(sweep, tps, [r["p99_ms"] for r in runs]):
                ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("throughput, texts/s (1-text requests; labels: clients)")
        ax.set_ylabel("latency, ms")
        ax.set_title("End to end: latency against load, 8 adapters mixed")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "latency_vs_load.png", dpi=110)
        plt.close(fig)
        names.append("img/latency_vs_load.png")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where benchmarks.md and img/ go")
    parser.add_argument("--from-json", type=Path, help="rewrite the report from saved figures, measuring nothing")
    args = parser.parse_args(argv)
    raw = REPO / "var" / "bench" / "results.json"
    if args.from_json:
        figures = json.loads(args.from_json.read_text())
    else:
        figures = run_all(args.quick)
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(figures, indent=1))
    figures = json.loads(json.dumps(figures))  # one shape whichever way: JSON keys are strings
    args.out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(figures, args.out / "img")
    write_markdown(figures, args.out / "benchmarks.md", plots)
    for what, measured, target, met in targets(figures):
        print(f"{'ok  ' if met else 'MISS'} {what}: {measured} (target {target})")
    print(f"wrote {args.out / 'benchmarks.md'} and {', '.join(plots)}; raw figures in {raw}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
