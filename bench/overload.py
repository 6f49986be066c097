"""Overload on this machine: admission refuses only what would wait, from the first second, and fast.

    .venv/bin/python -m bench.overload [--rounds 3] [--seconds 15] [--into docs/benchmarks.md]

`make serve`'s defaults (ADMISSION_MAX_WAIT_S=1, 2 gunicorn workers of 64 threads, 2 Triton instances), MiniLM,
8 adapters, short texts; closed-loop clients (bench/loadgen.py) that back off from Retry-After once refused.
Each round starts two fresh stacks:

- **cold**: the adapters loaded, then at once 256 clients x 16 texts, with no predict before, counted from
  the first request (no warm-up);
- **warm**: a quiet start (4 clients of lone texts), then each crowd of CROWDS in turn; then the 256 x 16 flood;
  then, once Triton's pending count is back to 0, every crowd again.

A stack with admission off (ADMISSION_MAX_WAIT_S=0), started once, takes the same flood each round (the
throughput it would have had) and, once, every crowd: their p99 there is the wait they meet, which decides
whether refusing any of them could be right.

Refusals are timed at the client and at the server (lora_api_refusal_seconds, from the request reaching the
worker to its 429 being written; the p99 is the upper bound of the histogram's bucket that holds it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.stack import REPO, Stack, bench_base, prepare_adapters  # sets up the HF environment

import requests

from bench.e2e import ADAPTERS
from bench.gpu.render import publish
from bench.revision import head_commit
from bench.loadgen import LoadResult, run_load
from lora_core.metric_names import LORA_API_REFUSAL_SECONDS, NV_INFERENCE_PENDING_REQUEST_COUNT
from lora_core.prometheus import MetricsSnapshot
from testkit.conditions import wait_for
from testkit.measure import summary
from testkit.texts import make_texts, short_texts

HEADING = "## Overload (bench/overload.py)"
RESULTS = REPO / "var" / "bench" / "overload.json"
FLOOD = (256, 16)  # clients, texts per request
LONG = make_texts(1, 600, seed=6)[0]  # past MiniLM's 512 tokens


def _mixed_eight(texts: list[str]):
    def texts_of(client: int, k: int) -> list[str]:
        first = (client * 11 + k * 8) % len(texts)
        return [LONG, *(texts[(first + i) % len(texts)] for i in range(7))]

    return texts_of


# name: (clients, texts per request, batch_size, with one 512-token text among 8)
CROWDS: dict[str, tuple[int, int, int | None, bool]] = {
    "8 x 16": (8, 16, 16, False),
    "12 x 8 mixed, batch_size 3": (12, 8, 3, True),
    "4 x 32": (4, 32, None, False),
    "16 x 1": (16, 1, None, False),
    "32 x 1": (32, 1, None, False),
}


def figures_of(run: LoadResult, refusal_server_p99_ms: float | None = None) -> dict[str, float | None]:
    answered, refused = run.statuses.get(200, 0), run.statuses.get(429, 0)
    return {
        "texts_per_s": run.texts_per_s,
        "ok_p99_ms": run.ok_p99_ms,
        "refused": refused,
        "refused_share": refused / max(1, answered + refused),
        "refused_p99_ms": run.refused_p99_ms,
        "refused_server_p99_ms": refusal_server_p99_ms,
        "other_failures": sum(n for s, n in run.statuses.items() if s not in (200, 429)) + run.malformed,
    }


def refusal_buckets(stack: Stack) -> dict[float, float]:
    """The shim's lora_api_refusal_seconds histogram: cumulative count by upper bound (seconds)."""
    assert stack.shim is not None
    snapshot = MetricsSnapshot(requests.get(f"{stack.shim.origin}/metrics", timeout=10).text)
    return {float(le): v for le, v in snapshot.by_label(f"{LORA_API_REFUSAL_SECONDS}_bucket", "le").items()}


def server_p99_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile of the refusals between two scrapes."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None
    return next(le for le, cumulative in counts if cumulative >= 0.99 * total) * 1000


def pending(stack: Stack) -> float:
    return stack.triton.metric(NV_INFERENCE_PENDING_REQUEST_COUNT, model="lora_classifier")


def flood(stack: Stack, texts: list[str], seconds: float, warmup: float) -> dict[str, float | None]:
    before = refusal_buckets(stack)
    clients, per_request = FLOOD
    run = run_load(stack.predict_url, ADAPTERS, texts, per_request, clients, seconds=seconds, warmup=warmup)
    return figures_of(run, server_p99_ms(before, refusal_buckets(stack)))


def crowd(stack: Stack, texts: list[str], name: str, seconds: float) -> dict[str, float | None]:
    clients, per_request, batch_size, mixed = CROWDS[name]
    run = run_load(
        stack.predict_url,
        ADAPTERS,
        texts,
        per_request,
        clients,
        seconds=seconds,
        warmup=1,
        batch_size=batch_size,
        texts_of=_mixed_eight(texts) if mixed else None,
    )
    return figures_of(run)


def every_crowd(stack: Stack, texts: list[str], seconds: float) -> dict[str, dict]:
    return {name: crowd(stack, texts, name, seconds) for name in CROWDS}


def measure(work: Path, rounds: int, seconds: float) -> dict[str, Any]:
    base = bench_base(work)
    root = work / "models"
    prepare_adapters(root, base, ADAPTERS)
    texts = short_texts(512, seed=3)
    crowd_s = seconds / 3
    result: dict[str, Any] = {"cold": [], "warm": [], "off": [], "after_quiet": [], "after_flood": []}
    off_env = {"ADMISSION_MAX_WAIT_S": "0"}
    with Stack(work / "stack-off", base, root, instances="auto", shim_env=off_env) as off:
        off.load(ADAPTERS)
        result["crowds_admission_off"] = every_crowd(off, texts, crowd_s)
        print(
            "admission off, crowds' p99 ms:",
            {k: round(v["ok_p99_ms"]) for k, v in result["crowds_admission_off"].items()},
        )
        for round_ in range(rounds):
            with Stack(work / f"stack-cold-{round_}", base, root, instances="auto") as cold:
                cold.load(ADAPTERS)
                result["cold"].append(flood(cold, texts, seconds, warmup=0))
            with Stack(work / f"stack-warm-{round_}", base, root, instances="auto") as warm:
                warm.load(ADAPTERS)
                run_load(warm.predict_url, ADAPTERS, texts, 1, 4, seconds=3, warmup=0)  # the quiet start
                result["after_quiet"].append(every_crowd(warm, texts, crowd_s))
                result["warm"].append(flood(warm, texts, seconds, warmup=3))
                wait_for(lambda w=warm: pending(w) == 0, 120, "Triton's queue drained")
                result["after_flood"].append(every_crowd(warm, texts, crowd_s))
            result["off"].append(flood(off, texts, seconds, warmup=3))
            report_round(result, round_)
    result.update(
        {
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "commit": head_commit() or "unknown",
            "rounds": rounds,
            "seconds": seconds,
        }
    )
    return result


def report_round(result: dict[str, Any], round_: int) -> None:
    for key in ("cold", "warm", "off"):
        f = result[key][-1]
        print(
            f"round {round_ + 1} {key}: {f['texts_per_s']:.0f} texts/s, accepted p99 {f['ok_p99_ms']:.0f} ms, "
            f"refused {f['refused_share']:.0%} in p99 {f['refused_p99_ms']:.0f} ms "
            f"(server {f['refused_server_p99_ms']}), "
            f"other failures {f['other_failures']}",
            flush=True,
        )
    for key in ("after_quiet", "after_flood"):
        refused = {name: (f["refused"], f["other_failures"]) for name, f in result[key][-1].items()}
        print(f"round {round_ + 1} crowds {key} (refused, other failures): {refused}", flush=True)


def overload_section(result: dict[str, Any]) -> list[str]:
    def column(runs: list[dict], key: str, scale: float = 1.0) -> list[float]:
        return [run[key] * scale for run in runs if run.get(key) is not None]

    cold, warm, off = result["cold"], result["warm"], result["off"]
    ratio = [w["texts_per_s"] / o["texts_per_s"] for w, o in zip(warm, off, strict=True)]
    ratio_cold = [c["texts_per_s"] / o["texts_per_s"] for c, o in zip(cold, off, strict=True)]
    lines = [
        HEADING,
        "",
        f"Measured {result['when']} at commit {result['commit']} on this machine (2 cores, the load generator on "
        "them too), "
        f"`.venv/bin/python -m bench.overload --into docs/benchmarks.md`: median [min-max] over {result['rounds']} "
        f"rounds. `make serve`'s defaults (ADMISSION_MAX_WAIT_S=1, 2 workers x 64 threads, 2 instances), MiniLM, "
        "8 adapters, short texts; refused clients back off as the README tells them (Retry-After, doubled at each "
        "refusal in a row, jittered). Each round starts a fresh stack for "
        f"the cold flood (256 x 16 right after the loads, counted from its first request, {result['seconds']:.0f} "
        "s) and one for the rest: a quiet start (4 clients of lone texts, 3 s), the crowds, the warm flood, and "
        "the crowds again once Triton's queue has drained.",
        "",
        "| 256 clients x 16 texts | cold (right after start) | warm | admission off | target |",
        "|---|---|---|---|---|",
        f"| texts/s answered | {summary(column(cold, 'texts_per_s'))} | {summary(column(warm, 'texts_per_s'))} | "
        f"{summary(column(off, 'texts_per_s'))} | |",
        f"| texts/s / admission off, same round | {summary(ratio_cold, 2)} | {summary(ratio, 2)} | | >= 0.9 |",
        f"| accepted requests' p99 | {summary(column(cold, 'ok_p99_ms'))} ms | {summary(column(warm, 'ok_p99_ms'))} "
        f"ms | {summary(column(off, 'ok_p99_ms'))} ms | <= 2500 ms |",
        f"| refused | {summary(column(cold, 'refused_share', 100), 1)} % | "
        f"{summary(column(warm, 'refused_share', 100), 1)} % | | |",
        f"| refusals' p99 at the client | {summary(column(cold, 'refused_p99_ms'))} ms | "
        f"{summary(column(warm, 'refused_p99_ms'))} ms | | <= 100 ms |",
        f"| refusals' p99 at the server (bucket bound) | {summary(column(cold, 'refused_server_p99_ms'))} ms | "
        f"{summary(column(warm, 'refused_server_p99_ms'))} ms | | <= 100 ms |",
        f"| other failures or malformed answers | {int(sum(column(cold, 'other_failures')))} | "
        f"{int(sum(column(warm, 'other_failures')))} | {int(sum(column(off, 'other_failures')))} | none |",
        "",
        "Crowds whose work fits in what Triton runs at once: refused and failed predicts, summed over the rounds "
        "(target: none), and their p99; the p99 with admission off is the wait they meet.",
        "",
        "| crowd | refused after a quiet start | refused after a flood | other failures | p99 after a quiet "
        "start | p99 after a flood | p99 admission off |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CROWDS:
        quiet = [r[name] for r in result["after_quiet"]]
        drained = [r[name] for r in result["after_flood"]]
        lines.append(
            f"| {name} | {int(sum(column(quiet, 'refused')))} | {int(sum(column(drained, 'refused')))} | "
            f"{int(sum(column(quiet + drained, 'other_failures')))} | {summary(column(quiet, 'ok_p99_ms'))} ms | "
            f"{summary(column(drained, 'ok_p99_ms'))} ms | {result['crowds_admission_off'][name]['ok_p99_ms']:.0f} ms |"
        )
    return [*lines, ""]


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
