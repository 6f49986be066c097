"""`make cluster` itself, in its own state directory and ports: it starts etcd (3 members, auth on), the nodes
with their agents, HAProxy and the shim; prints every node's URL; serves through the shim with every node in
status; restarts a node that dies; and on SIGTERM stops everything, leaving no process, with exit 0."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from testkit.conditions import wait_for
from testkit.factories import OutputSpec, make_training_output
from testkit.make_harness import Cluster

REPO = Path(__file__).resolve().parents[2]
NODES = 2
TEXTS = ["baba dede kiki", "类别 好坏"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, base_dir):
    work = tmp_path_factory.mktemp("make-cluster")
    root = work / "models"
    make_training_output(root, "alpha", base_dir, OutputSpec(num_labels=3, seed=80))
    target = Cluster(
        work, work / "state", Cluster.ports(NODES), NODES, BASE_MODEL_DIR=str(base_dir), MODELS_ROOT=str(root)
    )
    with target:  # stopped as a user would, even when a test fails
        target.wait_ready()
        yield target.process, target.base, target.output, work / "state", target.triton_port


def test_it_serves_through_the_shim_with_every_node_in_status(cluster):
    process, base, output, state, triton_port = cluster
    for i in range(NODES):
        assert f"node{i}: Triton http://127.0.0.1:{triton_port + 10 * i}" in output()

    def every_node_ready() -> bool:  # "ready at" comes once the service answers: the first ready node
        nodes = requests.get(f"{base}/inference/status", timeout=30).json()["nodes"]
        return [(n["node_id"], n["status"]) for n in nodes] == [(f"node{i}", "ready") for i in range(NODES)]

    wait_for(every_node_ready, 120, "every node ready")
    assert requests.post(f"{base}/inference/models/load", json={"model_dir": "alpha"}, timeout=60).status_code == 200
    answer = requests.post(f"{base}/inference/predict", json={"model_id": "alpha", "texts": TEXTS}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert stat.S_IMODE((state / "cluster-secrets.json").stat().st_mode) == 0o600


def test_a_node_that_dies_is_restarted_and_serves_again(cluster):
    process, base, output, state, triton_port = cluster
    node1 = [p for p in psutil.Process(process.pid).children(recursive=True) if _is_node(p, triton_port + 10)]
    assert len(node1) == 1, node1
    node1[0].kill()
    wait_for(lambda: "restarting node1" in output(), 30, "node1 restarted")

    def node1_ready() -> bool:
        states = {
            n["node_id"]: n["status"] for n in requests.get(f"{base}/inference/status", timeout=30).json()["nodes"]
        }
        return states.get("node1") == "ready"

    wait_for(node1_ready, 180, "node1 ready again")
    client_url = f"http://127.0.0.1:{triton_port + 10}/v2/models/lora_classifier/ready"
    assert requests.get(client_url, timeout=10).status_code == 200


def test_sigterm_stops_everything_and_leaves_no_process(cluster):
    process, base, output, state, triton_port = cluster
    group = psutil.Process(process.pid).children(recursive=True)
    script = next(p for p in group if "scripts/cluster.py" in " ".join(p.cmdline()))
    script.send_signal(signal.SIGTERM)  # as `kill` or a service manager would; Ctrl-C is the same handler
    group = [p.pid for p in group]
    assert process.wait(timeout=120) == 0, output()[-3000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) and _alive(pid) for pid in group):
        time.sleep(0.2)
    left = [pid for pid in group if psutil.pid_exists(pid) and _alive(pid)]
    assert not left, [psutil.Process(pid).cmdline() for pid in left]
    assert "left the registry" in output()


def _is_node(process: psutil.Process, http_port: int) -> bool:
    try:
        return process.name() == "tritonserver" and f"--http-port={http_port}" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_cluster_started_on_other_etcd_ports_than_its_data_is_refused_by_name(tmp_path):
    """etcd keeps its members' peer URLs in its data: started on other ports, the members would wait for each other
    forever. make cluster says so, before it starts anything."""
    state = tmp_path / "state"
    (state / "etcd" / "etcd0").mkdir(parents=True)
    (state / "etcd" / "port").write_text("23790\n")
    (state / "cluster-secrets.json").write_text('{"root": "r", "node": "n", "shim": "s", "control_token": "t"}')
    settings = {"BASE_MODEL_DIR": str(tmp_path), "MODELS_ROOT": str(tmp_path), "STATE_DIR": str(state)}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cluster.py")],
        env={**os.environ, **settings, "CLUSTER_ETCD_PORT": "24790"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "made on CLUSTER_ETCD_PORT=23790" in done.stderr and "Traceback" not in done.stderr
    assert "rafthttp" not in done.stderr  # no etcd was started
