"""Real traffic on this machine: mixed lengths against the in-process ceilings, and a lone request.

    .venv/bin/python -m bench.mixed [--rounds 3] [--seconds 10] [--into docs/benchmarks.md]

The texts are seeded (testkit.texts.mixed_texts): 70% of 3-25 words, 25% of 25-110, 5% of 110-400, cut at
256 tokens. The service is `make serve`'s stack with its defaults (Triton instances: auto), 8 adapters loaded
with max_length 256. Each round measures, in this order:

- the in-process ceilings, on the bare base encoder (tokenize + forward, no adapter), the texts in batches
  of 16: in arrival order, and sorted by length over the whole set;
- the service: 32 closed-loop clients each sending 1-text predicts over the 8 adapters (bench/loadgen.py);
- a lone request: one client sending one short text at a time, against AdapterEngine.classify of one short
  text in-process (batch 1), the two in alternating blocks of 20 calls (bench.loadgen.lone_pair).

Tokens/s count real tokens (no padding). Ratios are computed within a round, so machine noise hits both sides.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.stack import REPO, Stack, in_process_engine  # sets up the HF environment

import torch

from adapter_manager import AdapterEngine
from bench.e2e import ADAPTERS
from bench.gpu.render import publish
from bench.revision import head_commit
from bench.loadgen import lone_pair, run_load
from testkit.measure import summary
from testkit.texts import mixed_texts, short_texts

HEADING = "## Mixed lengths and a lone request (bench/mixed.py)"
RESULTS = REPO / "var" / "bench" / "mixed.json"
MAX_LENGTH = 256
CEILING_BATCH = 16
CLIENTS = 32
SWEEP = (1, 4, 16, 32, 64)  # clients, for tokens/s against concurrency
PLOTS = ("mixed_throughput_vs_concurrency.png", "mixed_latency_cdf.png")


def token_ids(engine: AdapterEngine, texts: list[str]) -> list[list[int]]:
    return engine.tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]


def padded(engine: AdapterEngine, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """One batch as the bare encoder takes it: padded to its longest row, with the attention mask."""
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), engine.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}


def ceilings(engine: AdapterEngine, texts: list[str], seconds: float) -> dict[str, float]:
    """Real tokens/s of the bare base forward, batches of 16: in arrival order, and globally sorted."""
    ids = token_ids(engine, texts)
    orders = {"arrival": ids, "sorted": sorted(ids, key=len)}
    tokens = sum(len(x) for x in ids)
    answer = {}
    for name, rows in orders.items():
        batches = [padded(engine, rows[i : i + CEILING_BATCH]) for i in range(0, len(rows), CEILING_BATCH)]
        passes, started = 0, time.perf_counter()
        while passes < 1 or time.perf_counter() - started < seconds:
            with torch.inference_mode():
                for batch in batches:
                    engine.model(**batch)
            passes += 1
        answer[name] = passes * tokens / (time.perf_counter() - started)
    return answer


def measure(work: Path, rounds: int, seconds: float) -> dict[str, Any]:
    base, root, engine = in_process_engine(work, ADAPTERS, load=ADAPTERS[:1], max_length=MAX_LENGTH)
    texts = mixed_texts(512, seed=1)
    lone_texts = short_texts(64, seed=2)
    lengths = [len(x) for x in token_ids(engine, texts)]
    mean_tokens = sum(lengths) / len(lengths)
    figures: dict[str, list[float]] = {
        k: []
        for k in (
            "arrival",
            "sorted",
            "service",
            "service_p50",
            "service_p99",
            "errors",
            "refused",
            "lone",
            "lone_base",
        )
    }
    latencies: list[float] = []  # every 1-text predict of the service runs, for the CDF
    sweep: dict[int, float] = {}  # clients -> tokens/s
    with Stack(work / "stack", base, root, instances="auto") as stack:
        stack.load(ADAPTERS, max_length=MAX_LENGTH)
        run_load(stack.predict_url, ADAPTERS, texts, 1, CLIENTS, seconds=2, warmup=1)  # first contact
        for round_ in range(rounds):
            ceiling = ceilings(engine, texts, seconds)
            figures["arrival"].append(ceiling["arrival"])
            figures["sorted"].append(ceiling["sorted"])
            served = run_load(stack.predict_url, ADAPTERS, texts, 1, CLIENTS, seconds=seconds, keep_latencies=True)
            latencies += served.latencies_ms
            figures["service"].append(served.texts_per_s * mean_tokens)
            figures["service_p50"].append(served.p50_ms)
            figures["service_p99"].append(served.p99_ms)
            figures["errors"].append(
                sum(n for s, n in served.statuses.items() if s not in (200, 429)) + served.malformed
            )
            figures["refused"].append(served.statuses.get(429, 0) / max(1, sum(served.statuses.values())))
            lone = lone_pair(
                lambda text: engine.classify([text], [ADAPTERS[0]]), stack.predict_url, ADAPTERS[0], lone_texts
            )
            figures["lone_base"].append(statistics.median(lone.in_process_ms))
            figures["lone"].append(statistics.median(lone.served_ms))
            print(
                f"round {round_ + 1}: ceilings {ceiling['arrival']:.0f} / {ceiling['sorted']:.0f} tokens/s, "
                f"service {figures['service'][-1]:.0f} tokens/s (p99 {served.p99_ms:.0f} ms), "
                f"lone {figures['lone'][-1]:.1f} ms vs {figures['lone_base'][-1]:.1f} ms in-process",
                flush=True,
            )
        for clients in SWEEP:
            swept = run_load(stack.predict_url, ADAPTERS, texts, 1, clients, seconds=seconds / 2)
            sweep[clients] = swept.texts_per_s * mean_tokens
            print(f"sweep: {clients} clients, {sweep[clients]:.0f} tokens/s, p99 {swept.p99_ms:.0f} ms", flush=True)
    return {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "commit": head_commit() or "unknown",
        "rounds": rounds,
        "seconds": seconds,
        "mean_tokens": mean_tokens,
        "threads": torch.get_num_threads(),
        "figures": figures,
        "sweep": sweep,
        "latencies_ms": latencies,
    }


def ratio(figures: dict[str, list[float]], a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(figures[a], figures[b], strict=True)]


def write_plots(result: dict[str, Any], out_dir: Path) -> None:
    """Tokens/s against concurrency beside both ceilings, and the CDF of the 32 clients' latencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    f, sweep = result["figures"], {int(k): v for k, v in result["sweep"].items()}
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sorted(sweep), [sweep[c] for c in sorted(sweep)], "o-", label="the service, 1-text predicts")
    for key, label, style in (
        ("sorted", "in-process, sorted batches of 16", "--"),
        ("arrival", "in-process, arrival order", ":"),
    ):
        ax.axhline(statistics.median(f[key]), linestyle=style, linewidth=1, color="gray", label=label)
    ax.set(xscale="log", xlabel="clients", ylabel="real tokens/s", title="Mixed lengths: tokens/s against concurrency")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[0], dpi=100)
    plt.close(fig)
    latencies = sorted(result["latencies_ms"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))])
    ax.set(xlabel="latency, ms", ylabel="share of requests", title=f"Mixed lengths: latency CDF, {CLIENTS} clients")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[1], dpi=100)
    plt.close(fig)


def mixed_section(result: dict[str, Any]) -> list[str]:
    f = result["figures"]
    sweep = {int(k): v for k, v in result.get("sweep", {}).items()}
    return [
        HEADING,
        "",
        f"Measured {result['when']} at commit {result.get('commit', 'unknown')} on this machine "
        "(2 cores, the load generator on them too), "
        f"`.venv/bin/python -m bench.mixed --into docs/benchmarks.md`: median [min-max] over {result['rounds']} "
        f"rounds of {result['seconds']:.0f} s. 512 seeded texts, 70% of 3-25 words, 25% of 25-110, 5% of 110-400, "
        f"at most {MAX_LENGTH} tokens: {result['mean_tokens']:.0f} real tokens per text on average. "
        f"`make serve`'s defaults, 8 adapters.",
        "",
        "| | tokens/s | service / it |",
        "|---|---|---|",
        f"| in-process ceiling: bare base forward, batches of 16 in arrival order | {summary(f['arrival'])} | "
        f"{summary(ratio(f, 'service', 'arrival'), 2)} |",
        f"| in-process ceiling: the same, batches of 16 sorted by length | {summary(f['sorted'])} | "
        f"**{summary(ratio(f, 'service', 'sorted'), 2)}** |",
        f"| the service: {CLIENTS} clients x 1-text predicts, 8 adapters | {summary(f['service'])} | |",
        "",
        f"The service's p50 {summary(f['service_p50'])} ms, p99 {summary(f['service_p99'])} ms; "
        f"refused for overload (429, ADMISSION_MAX_WAIT_S): {summary([100 * r for r in f.get('refused', [0])], 2)} % "
        f"of requests; failed or malformed answers: {int(sum(f['errors']))}.",
        "",
        "| a lone request: one client, one short text at a time (the two in alternating blocks of 20 calls) | p50 |",
        "|---|---|",
        f"| in-process, `AdapterEngine.classify`, batch 1 | {summary(f['lone_base'], 1)} ms |",
        f"| through the shim and Triton | {summary(f['lone'], 1)} ms |",
        f"| **ratio** | **{summary(ratio(f, 'lone', 'lone_base'), 2)}** |",
        "",
        "Tokens/s against concurrency (one run each, 1-text predicts): "
        + ", ".join(f"{c} clients {sweep[c]:.0f}" for c in sorted(sweep))
        + ".",
        "",
        *[f"![{Path(name).stem}](img/{name})" for name in PLOTS],
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "mixed")
    parser.add_argument("--into", type=Path, help="a benchmarks page whose section to replace")
    args = parser.parse_args(argv)
    result = measure(args.work, args.rounds, args.seconds)
    if args.into:
        write_plots(result, args.into.parent / "img")
    publish(mixed_section(result), HEADING, args.into, RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
