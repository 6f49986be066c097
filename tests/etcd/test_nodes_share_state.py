"""Two real tritonservers (two nodes, each with its own run and state directories) share their desired state
through a real 3-member etcd cluster with authentication on: what is acknowledged on one node is served, or
refused, on the other straight away, and with etcd gone the nodes go on serving what they last knew."""

from __future__ import annotations

import uuid

import pytest
import requests

from testkit.conditions import wait_for
from testkit.etcd_harness import PREFIX, EtcdMembers
from testkit.factories import OutputSpec, make_training_output
from testkit.triton_harness import LoraClient, TritonServer, expect_error, server_settings
from testkit.triton_tests_helpers import assert_rows_close, expected_rows

NODE_PASSWORD = "node-" + uuid.uuid4().hex
TEXTS = ["baba dede", "kiki lolo mumu"]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdMembers(tmp_path_factory.mktemp("etcd")) as members:
        members.enable_auth({"node": NODE_PASSWORD})
        yield members


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory, base_dir):
    root = tmp_path_factory.mktemp("models")
    for i, model_id in enumerate(("alpha", "team/beta")):
        make_training_output(root, model_id, base_dir, OutputSpec(num_labels=3, seed=60 + i))
    return root


@pytest.fixture(scope="module")
def etcd_settings(etcd):
    return {
        "ETCD_ENDPOINTS": ",".join(etcd.endpoints),
        "ETCD_USER": "node",
        "ETCD_PASSWORD": NODE_PASSWORD,
        "ETCD_PREFIX": f"{PREFIX}{uuid.uuid4().hex}/",
        "ETCD_TIMEOUT_S": "0.5",  # a change gives up after 2.5 s of etcd answering nothing
    }


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, etcd_settings, base_dir, shared_root):
    servers = []
    for i in range(2):
        work = tmp_path_factory.mktemp(f"node{i}")
        server = TritonServer(work, server_settings(base_dir, shared_root, work / "state", **etcd_settings))
        server.start()
        servers.append(server)
    clients = [LoraClient(server.url) for server in servers]
    yield clients
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def test_a_load_on_one_node_is_served_by_the_other_straight_after(nodes, reference, shared_root):
    first, second = nodes
    assert first.control({"op": "load", "model_dir": "alpha"})["status"] == "loaded"
    for got, want in zip(second.predict(TEXTS, ["alpha"] * 2), expected_rows(reference, shared_root, "alpha", TEXTS)):
        assert_rows_close(got, want)
    assert second.loaded() == ["alpha"]


def test_an_unload_on_one_node_is_refused_by_the_other_straight_after(nodes):
    first, second = nodes
    first.control({"op": "load", "model_dir": "team/beta"})
    second.predict(TEXTS, ["team/beta"] * 2)
    assert second.control({"op": "unload", "model_id": "team/beta"})["status"] == "unloaded"
    expect_error("model_not_loaded", first.predict, TEXTS, ["team/beta"] * 2)


def test_a_reload_on_one_node_reaches_the_other(nodes):
    first, second = nodes
    first.control({"op": "load", "model_dir": "alpha"})
    before = {m["model_id"]: m for m in second.control({"op": "list"})["models"]}["alpha"]["version"]
    first.control({"op": "load", "model_dir": "alpha", "reload": True})
    second.predict(TEXTS[:1], ["alpha"])
    after = {m["model_id"]: m for m in second.control({"op": "list"})["models"]}["alpha"]
    assert after["version"] == before + 1 and after["problem"] is None


def test_with_etcd_gone_changes_are_refused_and_predicts_go_on(nodes, etcd):
    first, second = nodes
    first.control({"op": "load", "model_dir": "alpha"})
    for i in range(3):
        etcd.kill(i)
    try:
        for client in nodes:
            assert len(client.predict(TEXTS, ["alpha"] * 2)) == 2  # the last state known
            error = expect_error("backend_unavailable", client.control, {"op": "unload", "model_id": "alpha"})
            assert "etcd is unreachable" in error.message
            assert client.control({"op": "status"})["state_stale"] is True
    finally:
        etcd.start()
    assert second.control({"op": "unload", "model_id": "alpha"})["status"] == "unloaded"
    expect_error("model_not_loaded", first.predict, TEXTS, ["alpha"] * 2)
    assert first.control({"op": "status"})["state_stale"] is False


def test_a_node_that_starts_while_etcd_is_down_stays_not_ready_until_it_has_the_state(
    nodes, etcd, etcd_settings, tmp_path, base_dir, shared_root
):
    first, _ = nodes
    first.control({"op": "load", "model_dir": "team/beta"})
    late = TritonServer(tmp_path, server_settings(base_dir, shared_root, tmp_path / "state", **etcd_settings))
    for i in range(3):
        etcd.kill(i)
    try:
        late.server.launch(late.command(), late.env)
        wait_for(lambda: "the desired state is unreachable" in late.server.log_tail(), 120, "the late node waiting")
        assert not answers_ready(late.ready_url)  # no balancer sends it traffic (Triton listens only once ready)
        etcd.start()
        late.server.wait_ready(late.ready_url, 120)
        client = LoraClient(late.url)
        assert "team/beta" in client.loaded()
        assert len(client.predict(TEXTS, ["team/beta"] * 2)) == 2
        client.close()
    finally:
        etcd.start()  # starts only the members that are down
        late.stop()


def answers_ready(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False
