"""The GPU section of docs/benchmarks.md, from the figures of the last GPU check (docs/gpu/results.json).

bench/report.py includes it in the page it writes, so `make bench` (which runs on CPU) keeps the GPU figures.
To put a new GPU run's figures in place without a whole `make bench`:

    cp "$OUT"/gpu.json docs/gpu/results.json      # from the device run of bench/gpu/check.py
    .venv/bin/python -m bench.gpu.render --into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from testkit.measure import summary

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "gpu" / "results.json"
HEADING = "## GPU (bench/gpu/check.py)"


# Dense fp16/bf16 tensor-core peaks (NVIDIA's data sheets, without sparsity), by a part of the card's name.
PEAK_FP16_TFLOPS = {"H200": 989.4, "H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0}


def peak_tflops(card: str) -> float | None:
    return next((peak for part, peak in PEAK_FP16_TFLOPS.items() if part in card), None)


def service_cpu(by_class: dict[str, list[float]]) -> str:
    """'shim 0.61, stubs 0.30, tritonserver 0.05' (medians), or '-'."""
    order = ("shim", "stubs", "tritonserver", "other")
    parts = [f"{kind} {statistics.median(by_class[kind]):.2f}" for kind in order if by_class.get(kind)]
    return ", ".join(parts) or "-"


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Round by round: served round k against in-process round k."""
    return [x / y for x, y in zip(a, b) if y]


def gpu_section(f: dict[str, Any]) -> list[str]:
    env = f["environment"]
    gpu = env.get("gpu", {})
    encoder = f["encoder"]
    lines = [
        HEADING,
        "",
        f"Run on {gpu.get('name', 'no GPU')} ({gpu.get('nvidia_smi', '')}; torch CUDA {gpu.get('cuda', '-')}) on "
        f"{f['when']} at commit {f.get('commit', 'unknown')}; Python {env['python']}, torch {env['torch']}, "
        f"transformers {env['transformers']}, "
        f"peft {env['peft']}, {env['cpus']} CPU cores. Encoder of BERT-base's shape ({encoder['layers']} layers, "
        f"hidden {encoder['hidden']}, {encoder['heads']} heads, random weights), {f['dtype']}, 8 real PEFT adapters "
        f"(r=8 on query/value, 4 labels), max_length {f['max_length']}; tritonserver 2.51 from the nvidia-pytriton "
        f"wheel with {f.get('instances', 1)} KIND_GPU instance(s) of lora_classifier. Figures are median [min-max] "
        "over the rounds. "
        "What the run needed and found: docs/gpu.md.",
        "",
    ]
    parity = f.get("parity")
    if parity:
        lines += [
            f"**Parity** against plain transformers + peft in fp32 (one text at a time, CPU), over "
            f"{parity['texts']} texts of mixed length, served in one request per adapter and in one request "
            f"mixing all 8: max |p - p_ref| {parity['max_abs_diff']:.2e}, mean {parity['mean_abs_diff']:.1e}, "
            f"top-1 label agreement {parity['top1_agreement']:.0%}.",
            "",
        ]
    ip = f["in_process"]
    lines += [
        "**In-process** (AdapterEngine on the GPU, batches of "
        f"{f['batch']}; `bare`: the base encoder alone, in arrival order or sorted by length):",
        "",
        "| texts | tokens/text | bare, sorted | bare, arrival | one adapter | 8 mixed |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("short", "mixed"):
        part = ip[name]
        cells = [
            f"{summary(part[m]['texts_per_s'])} texts/s, {summary(part[m]['tokens_per_s'])} tokens/s"
            for m in ("bare-sorted", "bare-arrival", "one", "mixed-8")
        ]
        lines.append(f"| {name} | {part['tokens_per_text']:.0f} | " + " | ".join(cells) + " |")
    if "forward_tokens" in ip:
        lines += [
            "",
            f"The engine measured a forward's fixed cost at {ip['forward_tokens']} padded tokens, so it cuts a batch "
            "into runs of similar length only where the padding saved costs more (adapter_manager/batching.py).",
        ]
    flops = ip.get("encoder_flops_per_token")
    peak = peak_tflops(gpu.get("name", ""))
    if flops and peak:
        cells = []
        for name in ("short", "mixed"):
            tokens = ip[name]["bare-sorted"]["tokens_per_s"]
            achieved = [t * flops[name] / 1e12 for t in tokens]
            cells.append(
                f"{name} texts {summary(achieved, 1)} TFLOP/s, {statistics.median(achieved) / peak:.1%} of peak "
                f"({flops[name] / 1e9:.2f} GFLOP per token)"
            )
        lines += [
            "",
            f"**The bare encoder against the card's roofline** (dense fp16 peak {peak:.0f} TFLOP/s; FLOPs per token "
            "counted as 2 per weight of the layers' matrices plus attention's 4 x hidden x sequence per layer): "
            + "; ".join(cells)
            + ".",
        ]
    served = dict(f.get("served", {}))
    shim = f.get("through_shim", {})
    served.update({f"shim/{key}": entry for key, entry in shim.get("served", {}).items()})
    if served:
        lines += [
            "",
            "**Served**, through Triton's HTTP protocol (`triton`) and through the shim under gunicorn with "
            "`make serve`'s defaults (`shim`), against the in-process figure of the same texts and adapters, and "
            "against the length-sorted bare ceiling in tokens/s; served round k is paired with in-process round k "
            "(measured after Triton stopped, in the same run). Clients are closed loops (bench/loadgen.py) on the "
            "same machine: 1-text x 64 over several processes (bench/multiclient.py, their CPU per request "
            "given, and the service's, by process, from /proc), the others threads of one process:",
            "",
            "| via | texts | adapters | texts x clients | client | texts/s | p50 ms | p99 ms | failed | / in-process | "
            "tokens/s / sorted ceiling | client CPU ms / request | service CPU ms / request |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for entry in served.values():
            same = ip[entry["texts"]][entry["adapters"]]
            ceiling = ip[entry["texts"]]["bare-sorted"]["tokens_per_s"]
            versus = (
                f"{summary(ratios(entry['texts_per_s'], same['texts_per_s']), 2)} | "
                f"{summary(ratios(entry['tokens_per_s'], ceiling), 2)}"
            )
            if entry["clients"] == 1:  # a lone client measures latency, below; its throughput is no comparison
                versus = "- | -"
            client_cpu = entry.get("client_cpu_ms_per_request") or []
            lines.append(
                f"| {entry.get('via', 'triton')} | {entry['texts']} | {entry['adapters']} | "
                f"{entry['texts_per_request']} x {entry['clients']} | {entry.get('client', 'threads of one process')} "
                f"| {summary(entry['texts_per_s'])} | {summary(entry['p50_ms'], 1)} | {summary(entry['p99_ms'], 1)} | "
                f"{entry['failed']} | {versus} | {summary(client_cpu, 2) if client_cpu else '-'} | "
                f"{service_cpu(entry.get('cpu_ms_per_request', {}))} |"
            )
        if "error" in shim:
            lines += ["", f"The shim did not start: `{shim['error'].splitlines()[-1][:300]}`."]
        batch1 = ip["batch1_ms"]["p50"]
        for entry in served.values():
            if entry["clients"] == 1 and entry["texts_per_request"] == 1:
                lines += [
                    "",
                    f"**A lone request** through {entry.get('via', 'triton')} (one client, one short text): served "
                    f"p50 {summary(entry['p50_ms'], 1)} ms against {batch1:.1f} ms in-process at batch 1 "
                    f"({statistics.median(entry['p50_ms']) / batch1:.2f}x).",
                ]
    by_instances = f.get("served_by_instances", {})
    if len(by_instances) > 1:
        keys = [k for k in next(iter(by_instances.values())) if k.endswith("/1x64")]
        lines += [
            "",
            "**KIND_GPU instances**, 1-text requests from 64 clients straight to Triton (the same rounds of the "
            "in-process engine as above), texts/s and / in-process:",
            "",
            "| instances | " + " | ".join(k.removesuffix("/1x64").replace("/", ", ") for k in keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for count, runs in by_instances.items():
            if "error" in runs:
                lines.append(f"| {count} | failed: {runs['error'].strip().splitlines()[-1][:200]} |")
                continue
            cells = []
            for key in keys:
                entry = runs[key]
                same = ip[entry["texts"]][entry["adapters"]]["texts_per_s"]
                cells.append(f"{summary(entry['texts_per_s'])} ({summary(ratios(entry['texts_per_s'], same), 2)})")
            lines.append(f"| {count} | " + " | ".join(cells) + " |")
    pa = f.get("perf_analyzer")
    if pa:
        lines += [
            "",
            f"**perf_analyzer** against Triton, 1-text requests at concurrency {pa['clients']}, one run of stable "
            "3 s windows each:",
            "",
            "| adapters | texts/s | p50 ms | p99 ms | / in-process (median) |",
            "|---|---|---|---|---|",
        ]
        for adapters in ("one", "mixed-8"):
            run = pa.get(adapters, {})
            if "error" in run:
                lines.append(f"| {adapters} | failed: {run['error'].strip().splitlines()[-1][:200]} | | | |")
            elif run:
                in_proc = statistics.median(ip["short"][adapters]["texts_per_s"])
                lines.append(
                    f"| {adapters} | {run['texts_per_s']:.0f} | {run['p50_ms']:.1f} | {run['p99_ms']:.1f} | "
                    f"{run['texts_per_s'] / in_proc:.2f} |"
                )
    status = f.get("status", {})
    for worker in status.get("workers", []):
        lines += [
            "",
            f"**Status** (api_shim.status over Triton's metrics): worker `{worker['worker_id']}` on "
            f"`{worker['device']}`, {worker['used_memory_mb']} of {worker['total_memory_mb']} MB used "
            f"({worker['memory_usage_percent']}%), {status.get('loaded_models_count')} models loaded.",
        ]
    lines += [
        "",
        "Rerun (on a GPU machine; see docs/gpu.md): `bash bench/gpu/bundle.sh` here, then "
        "`python3 -m bench.gpu.check --bundle .gpu --out $OUT` there (from the repository root).",
        "",
    ]
    return lines


def load_results(path: Path = RESULTS) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def replace_section(page: str, section: list[str], heading: str = HEADING) -> str:
    """`page` with its section under `heading` replaced by `section`, or with `section` put before `## Plots`."""
    lines = page.split("\n")
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        return "\n".join(lines[:start] + section + lines[end:])
    at = lines.index("## Plots") if "## Plots" in lines else len(lines)
    return "\n".join(lines[:at] + section + lines[at:])


def publish(
    section: list[str], heading: str, into: Path | None, results: Path | None = None, figures: Any = None
) -> None:
    """Keep a benchmark's raw `figures` as JSON in `results`, print its section, and put it under `heading` in
    the page `into` (when given), leaving the rest of the page as it is."""
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    print("\n".join(section))
    if into is not None:
        into.write_text(replace_section(into.read_text(encoding="utf-8"), section, heading), encoding="utf-8")


def section_of(page: str, heading: str) -> list[str]:
    """The section of `page` under `heading` (up to the next `## `), or nothing."""
    lines = page.split("\n")
    if heading not in lines:
        return []
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--into", type=Path, help="a benchmarks page whose GPU section to replace")
    args = parser.parse_args(argv)
    figures = load_results(args.results)
    if figures is None:
        sys.exit(f"{args.results}: no GPU figures")
    publish(gpu_section(figures), HEADING, args.into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
