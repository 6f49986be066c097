"""What keeping the desired state in etcd costs a node, measured in-process against a real 3-member etcd
(Debian's etcd-server, authentication on) on this machine:

- the check itself: a linearizable read of the state key's revision through the JSON gateway;
- what it costs a batch (one adapter, 16 short texts, MiniLM): the service classifies with the check
  (`classify_current`; before the forward, as on a CPU, then beside it, as on a GPU), against the same
  service classifying with no check at all, batch after batch in alternation; the difference is the
  throughput a node gives up;
- a load, end to end in the service (validate, read the adapter, write the state by compare-and-set), with
  the file manifest and with etcd: the difference is what etcd adds to a load's latency.

Each figure is the median [min-max] over rounds; the ratios are computed within a round.

    .venv/bin/python -m bench.etcd_check [--rounds 5] [--into docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.stack import bench_base, prepare_adapters  # sets up the HF environment

from bench.gpu.render import publish
from bench.revision import head_commit

from adapter_manager import AdapterEngine
from adapter_manager.etcd_state import EtcdDesiredState
from adapter_manager.manifest import AdapterManifest
from adapter_manager.service import AdapterService, ClassifyRequest
from lora_core.commands import parse_command
from lora_cluster.etcd import Credentials, EtcdCluster
from testkit.etcd_harness import PREFIX, EtcdMembers
from testkit.measure import summary
from testkit.texts import make_texts

HEADING = "## The desired state in etcd (bench/etcd_check.py)"  # its section of docs/benchmarks.md
CHECKS_PER_ROUND = 300
BATCHES_PER_ROUND = 60
LOADS_PER_ROUND = 5


def median_ms(fn, count: int) -> float:
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes `pids` have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def cpu_ms_per_call(fn, count: int, other_pids: list[int]) -> float:
    """CPU per call, in this process (every thread) and in `other_pids` together."""
    process, others = time.process_time(), cpu_seconds(other_pids)
    for _ in range(count):
        fn()
    return (time.process_time() - process + cpu_seconds(other_pids) - others) / count * 1000


def paired_ms(first, second, count: int) -> tuple[float, float]:
    """The median duration of `first`, and the median extra time `second` takes: the two are called in
    alternation (ABBA, so neither always runs first), and each pair's difference is taken within the pair,
    so that a noisy neighbour hits both alike."""
    firsts, extras = [], []
    for i in range(count):
        order = ((first, 0), (second, 1)) if i % 2 == 0 else ((second, 1), (first, 0))
        durations = [0.0, 0.0]
        for fn, slot in order:
            started = time.perf_counter()
            fn()
            durations[slot] = time.perf_counter() - started
        firsts.append(durations[0])
        extras.append(durations[1] - durations[0])
    return statistics.median(firsts) * 1000, statistics.median(extras) * 1000


def etcd_section(figures: dict[str, list[float]], rounds: int) -> list[str]:
    rows = [
        ("the check alone: a linearizable read of the state key's revision (JSON gateway)", "check", 2, "ms"),
        ("one batch: one adapter, 16 short texts, MiniLM, no check", "plain", 1, "ms"),
        ("what the check before the forward adds to that batch (wall clock; what a CPU node does)", "checked", 2, "ms"),
        ("**throughput a CPU node gives up to the check**", "ratio", 1, "%"),
        ("what the check beside the forward adds to that batch (what a GPU node does)", "checked_beside", 2, "ms"),
        ("throughput given up with the check beside the forward, on this CPU", "ratio_beside", 1, "%"),
        ("CPU of one check: this process, and etcd's 3 members", "check_cpu", 2, "ms"),
        ("CPU of one batch: every torch thread", "batch_cpu", 1, "ms"),
        ("**share of the CPU the check takes**", "cpu_ratio", 1, "%"),
        ("a load (reload from disk), file manifest", "load_file", 1, "ms"),
        ("the same load, etcd", "load_etcd", 1, "ms"),
        ("**what etcd adds to a load**", "extra", 1, "ms"),
    ]
    return [
        HEADING,
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} at commit {head_commit() or 'unknown'} on this machine "
        "(2 cores), in-process, against a real 3-member "
        f"etcd 3.4 with authentication on, all on the same 2 cores; median [min-max] over {rounds} rounds "
        f"(`.venv/bin/python -m bench.etcd_check --into docs/benchmarks.md`).",
        "",
        "| | |",
        "|---|---|",
        *[f"| {label} | {summary(figures[key], digits)} {unit} |" for label, key, digits, unit in rows],
        "",
        "The check goes over a kept-alive connection (`lora_cluster.etcd.KeepAliveClient`). On a GPU node it runs "
        "beside the forward, in a thread of the model instance, while the CPU is idle, and a batch is classified "
        "again only when the check finds that the state changed (`AdapterService.classify_current`). On a CPU node "
        "the forward keeps every core busy: a check beside it preempts torch's threads and costs more than its own "
        "duration (the row above), so a CPU node checks first. Each wall-clock cost is the difference of two noisy "
        "figures on a shared machine, taken pair by pair; the CPU share is the steadier figure. On separate machines "
        "etcd's share is not the node's: the check then costs the node only its own part of the CPU figure.",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--into", type=Path, help="a benchmarks page whose section to replace")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="etcd-check-"))
    base = bench_base(work)
    root = work / "models"
    prepare_adapters(root, base, ["one"])
    engine = AdapterEngine(base, root, device="cpu", dtype="float32")
    engine.load("one", 128)
    texts = make_texts(16, words=7, seed=1)
    batch = [ClassifyRequest(texts, ["one"] * len(texts))]
    password = uuid.uuid4().hex
    names = ("check", "plain", "checked", "ratio", "checked_beside", "ratio_beside", "check_cpu", "batch_cpu")
    names += ("cpu_ratio",)
    names += ("load_file", "load_etcd", "extra")
    figures: dict[str, list[float]] = {k: [] for k in names}
    with EtcdMembers(work / "etcd") as etcd:
        etcd.enable_auth({"node": password})
        store = EtcdDesiredState(EtcdCluster(etcd.endpoints, Credentials("node", password)), f"{PREFIX}bench/")
        store.signature()  # log in first
        stores = {"file": AdapterManifest(work / "state"), "etcd": store}
        services = {
            name: AdapterService(AdapterEngine(base, root, "cpu", "float32"), state, name, 10**5, max_adapters=8)
            for name, state in stores.items()
        }
        command = parse_command({"op": "load", "model_dir": "one", "reload": True}, 512)
        node = services["etcd"]
        node.load(command)
        for _ in range(args.rounds):
            figures["check"].append(median_ms(store.signature, CHECKS_PER_ROUND))
            for key, beside in (("", False), ("_beside", True)):
                node.check_beside = beside
                plain, extra = paired_ms(
                    lambda: node.classify(batch), lambda: node.classify_current(batch), BATCHES_PER_ROUND
                )
                figures["plain"].append(plain)
                figures[f"checked{key}"].append(extra)
                figures[f"ratio{key}"].append(100 * extra / (plain + extra))
            etcd_pids = [process.process.pid for process in etcd.processes]
            check_cpu = cpu_ms_per_call(store.signature, CHECKS_PER_ROUND, etcd_pids)
            batch_cpu = cpu_ms_per_call(lambda: node.classify(batch), BATCHES_PER_ROUND, [])
            figures["check_cpu"].append(check_cpu)
            figures["batch_cpu"].append(batch_cpu)
            figures["cpu_ratio"].append(100 * check_cpu / (check_cpu + batch_cpu))
            load_file = median_ms(lambda: services["file"].load(command), LOADS_PER_ROUND)
            load_etcd = median_ms(lambda: services["etcd"].load(command), LOADS_PER_ROUND)
            figures["load_file"].append(load_file)
            figures["load_etcd"].append(load_etcd)
            figures["extra"].append(load_etcd - load_file)
        for service in services.values():
            service.close()
    publish(etcd_section(figures, args.rounds), HEADING, args.into)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
