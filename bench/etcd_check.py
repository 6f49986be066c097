"""What keeping the desired state in etcd costs a node, measured in-process against a real 3-member etcd
(Debian's etcd-server, authentication on) on this machine:

- the check before each batch (a linearizable read of the state key's revision through the JSON gateway),
  against one batch of the engine (one adapter, 16 short texts, MiniLM): their ratio is the throughput a node
  gives up, since the check runs before each batch;
- a load, end to end in the service (validate, read the adapter, write the state by compare-and-set), with
  the file manifest and with etcd: the difference is what etcd adds to a load's latency.

Each figure is the median [min-max] over rounds; the ratios are computed within a round.

    .venv/bin/python -m bench.etcd_check [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.stack import bench_base, prepare_adapters  # sets up the HF environment

from adapter_manager import AdapterEngine
from adapter_manager.etcd_state import EtcdDesiredState
from adapter_manager.manifest import AdapterManifest
from adapter_manager.service import AdapterService
from lora_core.commands import parse_command
from lora_core.etcd import Credentials, EtcdCluster
from testkit.etcd_harness import PREFIX, EtcdMembers
from testkit.measure import summary
from testkit.texts import make_texts

HEADING = "## The desired state in etcd (bench/etcd_check.py)"  # its section of docs/benchmarks.md
CHECKS_PER_ROUND = 300
BATCHES_PER_ROUND = 30
LOADS_PER_ROUND = 5


def median_ms(fn, count: int) -> float:
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="etcd-check-"))
    base = bench_base(work)
    root = work / "models"
    prepare_adapters(root, base, ["one"])
    engine = AdapterEngine(base, root, device="cpu", dtype="float32")
    engine.load("one", 128)
    texts = make_texts(16, words=7, seed=1)
    password = uuid.uuid4().hex
    figures: dict[str, list[float]] = {k: [] for k in ("check", "batch", "ratio", "load_file", "load_etcd", "extra")}
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
        for _ in range(args.rounds):
            check = median_ms(store.signature, CHECKS_PER_ROUND)
            batch = median_ms(lambda: engine.classify(texts, ["one"] * len(texts)), BATCHES_PER_ROUND)
            figures["check"].append(check)
            figures["batch"].append(batch)
            figures["ratio"].append(100 * check / (check + batch))
            load_file = median_ms(lambda: services["file"].load(command), LOADS_PER_ROUND)
            load_etcd = median_ms(lambda: services["etcd"].load(command), LOADS_PER_ROUND)
            figures["load_file"].append(load_file)
            figures["load_etcd"].append(load_etcd)
            figures["extra"].append(load_etcd - load_file)
    print(f"check before a batch (linearizable read, 3 members, auth): {summary(figures['check'], 2)} ms")
    print(f"one batch, one adapter, 16 short texts:                  {summary(figures['batch'], 1)} ms")
    print(f"throughput given up to the check:                       {summary(figures['ratio'], 1)} %")
    print(f"load (reload from disk), file manifest:                 {summary(figures['load_file'], 1)} ms")
    print(f"load (reload from disk), etcd:                          {summary(figures['load_etcd'], 1)} ms")
    print(f"what etcd adds to a load:                               {summary(figures['extra'], 1)} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
