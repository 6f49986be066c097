"""Many nodes, one service, all real processes on loopback ports: etcd with 3 members (auth on), 3 tritonservers
(each with its own run and state directories) with their node agents, HAProxy, and the shim in front.

Read-your-writes on every node, status over every node, a node killed under traffic with no failed predict,
etcd members lost one and all, and racing load/unload clients.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from adapter_manager.etcd_state import EtcdDesiredState
from lora_cluster.etcd import Credentials, EtcdCluster
from lora_cluster.node_registry import NodeRegistry
from testkit.api_shim_env import TEST_SETTINGS
from testkit.conditions import wait_for
from testkit.etcd_harness import PREFIX, EtcdMembers
from testkit.factories import OutputSpec, make_training_output
from testkit.haproxy_harness import HAProxy
from testkit.process_harness import ManagedProcess
from testkit.shim_harness import ShimServer
from testkit.traffic import Traffic, summary
from testkit.triton_harness import REPO, LoraClient, TritonServer, expect_error, server_settings
from testkit.triton_tests_helpers import assert_rows_close, expected_rows

NODES = 3
NODE_PASSWORD = "node-" + uuid.uuid4().hex
SHIM_PASSWORD = "shim-" + uuid.uuid4().hex
TEXTS = ["baba dede", "kiki lolo mumu"]
MODELS = ("alpha", "team/beta", "gamma")


@dataclass
class Cluster:
    etcd: EtcdMembers
    nodes: list[TritonServer]
    agents: list[ManagedProcess]
    agent_commands: list[tuple[list[str], dict[str, str]]]
    haproxy: HAProxy
    shim: ShimServer
    root: Path
    prefix: str

    @property
    def api(self) -> str:
        return self.shim.base

    def status(self) -> dict:
        return requests.get(f"{self.api}/inference/status", timeout=30).json()

    def node_states(self) -> dict[str, str]:
        return {n["node_id"]: n["status"] for n in self.status()["nodes"]}

    def control(self, path: str, body: dict) -> requests.Response:
        return requests.post(f"{self.api}/inference/models/{path}", json=body, timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, base_dir):
    work = tmp_path_factory.mktemp("cluster")
    root = work / "models"
    for i, model_id in enumerate(MODELS):
        make_training_output(root, model_id, base_dir, OutputSpec(num_labels=3, seed=70 + i))
    etcd = EtcdMembers(work / "etcd")
    etcd.start()
    started: list = [etcd]
    try:
        etcd.enable_auth({"node": NODE_PASSWORD}, {"shim": SHIM_PASSWORD})
        shared = {
            "ETCD_ENDPOINTS": ",".join(etcd.endpoints),
            "ETCD_PREFIX": f"{PREFIX}{uuid.uuid4().hex}/",
            "ETCD_TIMEOUT_S": "0.5",
        }
        node_settings = {**shared, "ETCD_USER": "node", "ETCD_PASSWORD": NODE_PASSWORD}
        nodes = []
        for i in range(NODES):
            node_work = work / f"node{i}"
            node_work.mkdir()
            nodes.append(TritonServer(node_work, server_settings(base_dir, root, node_work / "state", **node_settings)))
        for node in nodes:  # start together: 3 model loads overlap
            node.server.launch(node.command(), node.env)
            started.append(node)
        for node in nodes:
            node.server.wait_ready(node.ready_url, 300)
        agents, agent_commands = [], []
        for i, node in enumerate(nodes):
            agent = ManagedProcess(work / f"agent{i}.log")
            agent_env = {
                **os.environ,
                **node_settings,
                "NODE_ID": f"node{i}",
                "NODE_TRITON_URL": node.url,
                "NODE_METRICS_URL": f"http://127.0.0.1:{node.metrics_port}/metrics",
                "NODE_REPORT_S": "1",
            }
            agent_commands.append(([sys.executable, "-m", "lora_cluster.node_agent"], agent_env))
            agent.launch(*agent_commands[-1], cwd=REPO)
            agents.append(agent)
            started.append(agent)
        haproxy = HAProxy(work, [(f"node{i}", node.url) for i, node in enumerate(nodes)])
        haproxy.start()
        started.append(haproxy)
        shim_settings = {
            **TEST_SETTINGS,
            **shared,
            "ETCD_USER": "shim",
            "ETCD_PASSWORD": SHIM_PASSWORD,
            "TRITON_URL": haproxy.data_url,
            "TRITON_CONTROL_URL": haproxy.control_url,
            "TRITON_METRICS_URL": f"http://127.0.0.1:{nodes[0].metrics_port}/metrics",
            "CONTROL_TOKEN": nodes[0].control_token,
        }
        shim = ShimServer(work, shim_settings)
        shim.start()
        started.append(shim)
        cluster = Cluster(etcd, nodes, agents, agent_commands, haproxy, shim, root, shared["ETCD_PREFIX"])
        wait_for(lambda: cluster.node_states() == {f"node{i}": "ready" for i in range(NODES)}, 60, "3 nodes ready")
        yield cluster
    finally:
        for part in reversed(started):
            part.stop()


@pytest.fixture
def clean(cluster):
    """Nothing loaded before and after each test."""
    yield cluster
    for model_id in MODELS:
        cluster.control("unload", {"model_id": model_id})


def node_clients(cluster: Cluster) -> list[LoraClient]:
    return [LoraClient(node.url) for node in cluster.nodes]


def test_status_covers_every_node(clean):
    status = clean.status()
    assert status["service_status"] == "running"
    assert [(n["node_id"], n["status"]) for n in status["nodes"]] == [(f"node{i}", "ready") for i in range(NODES)]
    assert [n["triton_url"] for n in status["nodes"]] == [node.url for node in clean.nodes]
    assert [w["worker_id"] for w in status["workers"]] == [f"node{i}/cpu-0" for i in range(NODES)]
    assert all(w["node_id"] == w["worker_id"].split("/")[0] and w["total_memory_mb"] > 0 for w in status["workers"])
    assert status["total_workers"] == NODES and status["pending_requests"] >= 0


def test_each_node_registers_once_with_what_it_has_applied(clean):
    reader = EtcdCluster(clean.etcd.endpoints, Credentials("shim", SHIM_PASSWORD))
    registry = NodeRegistry(reader, clean.prefix)
    assert clean.control("load", {"model_dir": "alpha"}).status_code == 200
    for client in node_clients(clean):
        client.predict(TEXTS[:1], ["alpha"])  # each node applies the state at its next batch
        client.close()
    desired = EtcdDesiredState(reader, clean.prefix).signature()  # the revision of the state just written
    wait_for(lambda: {record.applied_revision for record in registry.nodes()} == {desired}, 10, "every node at it")
    records = registry.nodes()
    assert [r.node_id for r in records] == [f"node{i}" for i in range(NODES)]  # one entry per node
    assert all(r.devices == ("cpu",) and r.triton_url == n.url for r, n in zip(records, clean.nodes, strict=True))


def test_a_node_whose_agent_stops_leaves_the_registry_and_comes_back_with_it(clean):
    agent = clean.agents[1]
    agent.stop()  # SIGTERM: the agent revokes its lease, the node leaves at once
    wait_for(lambda: "node1" not in clean.node_states(), 5, "node1 gone after a clean stop")
    agent.launch(*clean.agent_commands[1], cwd=REPO)
    wait_for(lambda: clean.node_states().get("node1") == "ready", 15, "node1 back")
    agent.process.kill()  # a dead agent: its lease lapses (NODE_LEASE_TTL_S, 10 s)
    wait_for(lambda: "node1" not in clean.node_states(), 15, "node1 gone once its lease lapsed")
    agent.process.wait(timeout=10)
    agent.launch(*clean.agent_commands[1], cwd=REPO)
    wait_for(lambda: clean.node_states().get("node1") == "ready", 15, "node1 back")


def test_a_load_through_the_shim_is_served_by_every_node_straight_after(clean, reference):
    answer = clean.control("load", {"model_dir": "alpha"})
    assert answer.status_code == 200, answer.text
    want = expected_rows(reference, clean.root, "alpha", TEXTS)
    for client in node_clients(clean):
        for got, expected in zip(client.predict(TEXTS, ["alpha"] * 2), want, strict=True):
            assert_rows_close(got, expected)
        client.close()
    assert clean.status()["loaded_models_count"] == 1


def test_an_unload_through_the_shim_is_refused_by_every_node_straight_after(clean):
    assert clean.control("load", {"model_dir": "team/beta"}).status_code == 200
    for client in node_clients(clean):
        client.predict(TEXTS, ["team/beta"] * 2)  # resident everywhere first
        client.close()
    assert clean.control("unload", {"model_id": "team/beta"}).status_code == 200
    for client in node_clients(clean):
        expect_error("model_not_loaded", client.predict, TEXTS, ["team/beta"] * 2)
        client.close()


def test_racing_load_and_unload_clients_end_in_the_last_acknowledged_state_on_every_node(clean):
    outcomes: list[tuple[float, float, str]] = []  # (sent, acknowledged, the state it asked for)
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(6):
            op = rng.choice(["load", "unload"])
            sent = time.monotonic()
            body = {"model_dir": "gamma"} if op == "load" else {"model_id": "gamma"}
            response = clean.control(op, body)
            # an unload of a model not loaded (404) leaves it unloaded, which is what was asked
            assert response.status_code == 200 or response.json()["error"] == "model_not_loaded", response.text
            with lock:
                outcomes.append((sent, time.monotonic(), "loaded" if op == "load" else "unloaded"))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    last = max(outcomes, key=lambda o: o[1])
    # the operations still in flight when the last one was sent may have committed after it
    candidates = {state for sent, acknowledged, state in outcomes if acknowledged >= last[0]}
    states = set()
    for node_client in node_clients(clean):
        try:
            node_client.predict(TEXTS[:1], ["gamma"])
            states.add("loaded")
        except Exception as exc:
            assert getattr(exc, "code", "") == "model_not_loaded", exc
            states.add("unloaded")
        node_client.close()
    assert len(states) == 1 and states <= candidates, (states, candidates)


def test_a_node_killed_under_traffic_fails_no_predict_and_comes_back_with_what_was_loaded_meanwhile(clean):
    assert clean.control("load", {"model_dir": "alpha"}).status_code == 200
    victim = clean.nodes[2]
    with Traffic(clean.api, ["alpha"], clients=16, texts=TEXTS) as traffic:
        traffic.wait_for(40, timeout=60)
        killed_at = time.monotonic()
        os.kill(victim.server.process.pid, signal.SIGKILL)
        wait_for(lambda: clean.node_states()["node2"] != "ready", 10, "node2 shown not ready")
        shown_after = time.monotonic() - killed_at
        loaded = clean.control("load", {"model_dir": "gamma"})  # loads go on meanwhile
        assert loaded.status_code == 200, loaded.text
        count = len(traffic.outcomes)
        traffic.wait_for(count + 40, timeout=60)
    failures = [o for o in traffic.outcomes if o.status != 200]
    assert not failures, summary(failures)
    assert shown_after < 10
    victim.server.process.wait(timeout=30)
    victim.start()  # as its supervisor would
    wait_for(lambda: clean.node_states()["node2"] == "ready", 60, "node2 back")
    client = LoraClient(victim.url)
    assert len(client.predict(TEXTS, ["gamma"] * 2)) == 2  # loaded while it was away
    client.close()


def test_etcd_losing_one_member_changes_nothing_and_losing_all_stops_only_changes(clean):
    assert clean.control("load", {"model_dir": "alpha"}).status_code == 200
    predict = {"model_id": "alpha", "texts": TEXTS}
    clean.etcd.kill(1)
    try:
        assert clean.control("load", {"model_dir": "gamma"}).status_code == 200
        assert requests.post(f"{clean.api}/inference/predict", json=predict, timeout=30).status_code == 200
        assert clean.status()["service_status"] == "running"
        for i in (0, 2):
            clean.etcd.kill(i)
        for path, body in (("load", {"model_dir": "team/beta"}), ("unload", {"model_id": "gamma"})):
            answer = clean.control(path, body)
            assert answer.status_code == 503 and answer.json()["error"] == "backend_unavailable", answer.text
        for _ in range(5):
            assert requests.post(f"{clean.api}/inference/predict", json=predict, timeout=30).status_code == 200
        for client in node_clients(clean):
            assert client.control({"op": "status"})["state_stale"] is True  # and each node logs it
            client.close()
    finally:
        clean.etcd.start()
    wait_for(lambda: clean.control("unload", {"model_id": "gamma"}).status_code == 200, 30, "changes accepted again")
    for client in node_clients(clean):
        expect_error("model_not_loaded", client.predict, TEXTS, ["gamma"] * 2)
        assert client.control({"op": "status"})["state_stale"] is False
        client.close()


def test_a_reload_through_the_shim_reaches_every_node(clean):
    assert clean.control("load", {"model_dir": "alpha"}).status_code == 200
    versions = {}
    for client in node_clients(clean):
        client.predict(TEXTS[:1], ["alpha"])
        versions[client] = {m["model_id"]: m for m in client.control({"op": "list"})["models"]}["alpha"]["version"]
    assert clean.control("load", {"model_dir": "alpha", "reload": True}).json()["reloaded"] is True
    for client, before in versions.items():
        client.predict(TEXTS[:1], ["alpha"])
        after = {m["model_id"]: m for m in client.control({"op": "list"})["models"]}["alpha"]
        assert after["version"] == before + 1 and after["problem"] is None
        client.close()


def test_a_node_that_starts_while_etcd_is_down_stays_not_ready_until_it_has_the_state(clean, tmp_path, base_dir):
    assert clean.control("load", {"model_dir": "team/beta"}).status_code == 200
    late = TritonServer(tmp_path, {**clean.nodes[0].env, "STATE_DIR": str(tmp_path / "state")})
    for i in range(3):
        clean.etcd.kill(i)
    try:
        late.server.launch(late.command(), late.env)
        wait_for(lambda: "the desired state is unreachable" in late.server.log_tail(), 120, "the late node waiting")
        assert not answers_ready(late.ready_url)  # no balancer sends it traffic (Triton listens once ready)
        clean.etcd.start()
        late.server.wait_ready(late.ready_url, 120)
        client = LoraClient(late.url)
        assert "team/beta" in client.loaded()
        assert len(client.predict(TEXTS, ["team/beta"] * 2)) == 2
        client.close()
    finally:
        clean.etcd.start()  # starts only the members that are down
        late.stop()


def answers_ready(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False
