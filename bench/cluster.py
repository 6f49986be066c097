"""More than one node, served: `make cluster` against `make serve`, on the same traffic, on this machine.

    .venv/bin/python -m bench.cluster [--nodes 1,2,3] [--rounds 3] [--seconds 8] [--into docs/benchmarks.md]

Every system runs at once, each with its own ports and state, with `make serve`'s defaults otherwise:
`make serve` (one node, the file manifest) and `make cluster` with each NODES asked for (etcd with 3 members
and authentication, HAProxy, the node agents). Each holds the same 8 adapters (r=8) on the same base. The
idle systems cost the measured one a little CPU (etcd heartbeats, health checks, agents), alike for all.

Each round drives every system in turn with closed-loop clients (bench/loadgen.py) through the REST shim:
16-text requests from 8 clients and 1-text requests from 32 clients, short texts, 8 adapters mixed. Ratios
are against `make serve` in the same round.

The single node's extra cost is then split, on the same rounds, by sending Triton's own protocol:
- to `make serve`'s tritonserver (the file manifest's check: a stat);
- to the cluster's node straight (the etcd check beside each batch);
- to the cluster's HAProxy data frontend (the etcd check, and the balancer's hop).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import requests

from bench.stack import REPO, bench_base, prepare_adapters  # sets up the HF environment

from bench.e2e import ADAPTERS
from bench.engine_throughput import TEXT_WORDS
from bench.gpu.render import publish
from bench.loadgen import SHIM, TRITON, run_load
from bench.revision import head_commit
from testkit.make_harness import MakeTarget, free_block
from testkit.measure import summary
from testkit.process_harness import free_port
from testkit.texts import make_texts

HEADING = "## More than one node (bench/cluster.py)"
RESULTS = REPO / "var" / "bench" / "cluster.json"
SCENARIOS = ((16, 8), (1, 32))  # (texts per request, clients)


class System:
    """One `make serve` or `make cluster`, started with its own ports and state under `work`."""

    def __init__(self, name: str, target: str, work: Path, base: Path, root: Path, nodes: int = 0) -> None:
        self.name = name
        shutil.rmtree(work, ignore_errors=True)  # a fresh state: nothing loaded, a new etcd
        api_port = free_port()
        settings = {
            "BASE_MODEL_DIR": str(base),
            "MODELS_ROOT": str(root),
            "STATE_DIR": str(work / "state"),
            "API_PORT": str(api_port),
        }
        if target == "serve":
            self.triton_port = free_port()
            settings.update(
                RUN_DIR=str(work / "run"),
                TRITON_HTTP_PORT=str(self.triton_port),
                TRITON_GRPC_PORT=str(free_port()),
                TRITON_METRICS_PORT=str(free_port()),
            )
            self.balancer_port = 0
        else:
            self.triton_port = free_block(10 * nodes)  # node i: http at +10i
            self.balancer_port = free_block(2)
            settings.update(
                NODES=str(nodes),
                CLUSTER_ETCD_PORT=str(free_block(6)),
                CLUSTER_TRITON_PORT=str(self.triton_port),
                CLUSTER_BALANCER_PORT=str(self.balancer_port),
            )
        self.api = f"http://127.0.0.1:{api_port}/api/v1"
        self.process = MakeTarget(target, work, settings)

    def start(self) -> None:
        self.process.start()

    def wait_ready(self, nodes: int) -> None:
        self.process.wait_ready(600)

        def every_node_ready() -> bool:
            status = requests.get(f"{self.api}/inference/status", timeout=30).json()
            listed = status.get("nodes", [{"status": "ready"}])  # make serve: one node, not listed
            return len(listed) == max(nodes, 1) and all(n["status"] == "ready" for n in listed)

        self.process.wait_for(every_node_ready, 300, f"{self.name}: every node ready")

    def load(self, model_ids: list[str]) -> None:
        for model_id in model_ids:
            answer = requests.post(f"{self.api}/inference/models/load", json={"model_dir": model_id}, timeout=300)
            answer.raise_for_status()


def scenario_key(texts_per_request: int, clients: int) -> str:
    return f"{texts_per_request}x{clients}"


def measure(work: Path, nodes: list[int], rounds: int, seconds: float) -> dict[str, Any]:
    base = bench_base(work)
    root = work / "models"
    prepare_adapters(root, base, ADAPTERS)
    texts = make_texts(256, TEXT_WORDS["short"], seed=1)
    systems = [System("serve", "serve", work / "serve", base, root)]
    systems += [System(f"cluster-{n}", "cluster", work / f"cluster-{n}", base, root, n) for n in nodes]
    counts = {"serve": 1, **{f"cluster-{n}": n for n in nodes}}
    results: dict[str, list[dict]] = {}
    try:
        for system in systems:  # one after the other: starting all at once on 2 cores takes longer
            system.start()
            system.wait_ready(counts[system.name])
            system.load(ADAPTERS)
            print(f"{system.name}: ready", flush=True)
        targets = [(s.name, s.api, SHIM) for s in systems]
        if 1 in nodes:
            serve, single = systems[0], systems[1 + nodes.index(1)]
            targets += [
                ("serve/triton", f"http://127.0.0.1:{serve.triton_port}", TRITON),
                ("cluster-1/triton", f"http://127.0.0.1:{single.triton_port}", TRITON),
                ("cluster-1/haproxy", f"http://127.0.0.1:{single.balancer_port}", TRITON),
            ]
        for _name, url, protocol in targets:  # first contact: kernels, connections, allocator
            run_load(_predict_url(url, protocol), ADAPTERS, texts, 16, 4, seconds=1, warmup=1, protocol=protocol)
        for round_ in range(rounds):
            # Rotate the order, so that no system always runs first in a round.
            rotated = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
            for texts_per_request, clients in SCENARIOS:
                for name, url, protocol in rotated:
                    result = run_load(
                        _predict_url(url, protocol),
                        ADAPTERS,
                        texts,
                        texts_per_request,
                        clients,
                        seconds=seconds,
                        protocol=protocol,
                    )
                    key = f"{name}/{scenario_key(texts_per_request, clients)}"
                    results.setdefault(key, []).append(result.as_dict())
                    print(
                        f"round {round_ + 1} {key}: {result.texts_per_s:.0f} texts/s, p50 {result.p50_ms:.0f} ms,"
                        f" p99 {result.p99_ms:.0f} ms, statuses {dict(result.statuses)}",
                        flush=True,
                    )
    finally:
        for system in reversed(systems):
            system.process.stop()
    return {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "commit": head_commit() or "unknown",
        "rounds": rounds,
        "seconds": seconds,
        "nodes": nodes,
        "results": results,
    }


def _predict_url(url: str, protocol) -> str:
    return f"{url}/inference/predict" if protocol is SHIM else url


def ratios(results: dict[str, list[dict]], key: str, against: str) -> list[float]:
    """Round-by-round ratio of texts/s, `key` over `against`."""
    return [a["texts_per_s"] / b["texts_per_s"] for a, b in zip(results[key], results[against], strict=True)]


def failures(results: dict[str, list[dict]]) -> int:
    """Answers that were not a 200 with one row per text, over every run."""
    runs = [run for runs in results.values() for run in runs]
    refused = sum(count for run in runs for status, count in run["statuses"].items() if status != "200")
    return refused + sum(run["malformed"] for run in runs)


def cluster_section(figures: dict[str, Any]) -> list[str]:
    results = figures["results"]
    names = ["serve"] + [f"cluster-{n}" for n in figures["nodes"]]
    lines = [
        HEADING,
        "",
        f"Measured {figures['when']} at commit {figures.get('commit', 'unknown')} on this machine "
        "(2 cores, every process on them), "
        f"`.venv/bin/python -m bench.cluster --into docs/benchmarks.md`: median [min-max] over {figures['rounds']} "
        f"rounds of {figures['seconds']:.0f} s, short texts, 8 adapters mixed, `make serve`'s defaults "
        "(2 Triton instances per node, 2 gunicorn workers). Ratios are against `make serve` in the same round. "
        f"Failed or malformed answers over every run: {failures(results)}.",
        "",
        "| system, through the shim | 16 texts x 8 clients: texts/s | vs `make serve` | p99 | "
        "1 text x 32 clients: texts/s | vs `make serve` | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        cells = []
        for texts_per_request, clients in SCENARIOS:
            scenario = scenario_key(texts_per_request, clients)
            runs = results[f"{name}/{scenario}"]
            cells += [
                summary([r["texts_per_s"] for r in runs]),
                summary(ratios(results, f"{name}/{scenario}", f"serve/{scenario}"), 2),
                f"{summary([r['p99_ms'] for r in runs])} ms",
            ]
        label = "`make serve` (1 node, file manifest)" if name == "serve" else f"`make cluster`, NODES={name[8:]}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "cluster-1/triton/16x8" in results:
        lines += [
            "",
            "Where one node's extra cost goes: Triton's own protocol, no shim.",
            "",
            "| to | 16 texts x 8 clients: texts/s | vs `make serve`'s Triton | 1 text x 32 clients: texts/s | "
            "vs `make serve`'s Triton |",
            "|---|---|---|---|---|",
        ]
        labels = {
            "serve/triton": "`make serve`'s tritonserver (file manifest: a stat per batch)",
            "cluster-1/triton": "the cluster's node, straight (etcd: a linearizable read per batch)",
            "cluster-1/haproxy": "the cluster's HAProxy data frontend (etcd, and the balancer's hop)",
        }
        for name, label in labels.items():
            cells = []
            for texts_per_request, clients in SCENARIOS:
                scenario = scenario_key(texts_per_request, clients)
                cells += [
                    summary([r["texts_per_s"] for r in results[f"{name}/{scenario}"]]),
                    summary(ratios(results, f"{name}/{scenario}", f"serve/triton/{scenario}"), 2),
                ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Every node shares the same 2 cores here, so more nodes cannot add throughput on this machine: each one "
        "adds its instances, its stubs and its agent to the same CPUs. The figures show what the layers cost, "
        "not how the service scales on separate machines.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,3", help="comma-separated NODES for make cluster")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per run (after 2 s warm-up)")
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "cluster")
    parser.add_argument("--into", type=Path, help="a benchmarks page whose section to replace")
    args = parser.parse_args(argv)
    figures = measure(args.work, [int(n) for n in args.nodes.split(",")], args.rounds, args.seconds)
    publish(cluster_section(figures), HEADING, args.into, RESULTS, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
