"""The desired state in a real 3-member etcd cluster with authentication on: compare-and-set on the revision,
read-your-writes across services, failover across members, bounded calls, and the import from one node."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from adapter_manager.engine import AdapterEngine
from adapter_manager.etcd_state import EtcdDesiredState, import_manifest
from adapter_manager.manifest import AdapterManifest, ManifestEntry
from adapter_manager.service import AdapterService, ClassifyRequest
from lora_core.errors import BackendUnavailable, InternalError, ModelNotLoaded
from lora_cluster.etcd import Credentials, EtcdCluster
from testkit.etcd_harness import PREFIX, EtcdMembers
from testkit.factories import OutputSpec, make_training_output

NODE = Credentials("node", "node-" + uuid.uuid4().hex)
SHIM = Credentials("shim", "shim-" + uuid.uuid4().hex)
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdMembers(tmp_path_factory.mktemp("etcd")) as members:
        members.enable_auth({NODE.user: NODE.password}, {SHIM.user: SHIM.password})
        yield members


@pytest.fixture
def store(etcd):
    """A store under a prefix of its own, so tests do not see each other's state."""
    return EtcdDesiredState(EtcdCluster(etcd.endpoints, NODE, TIMEOUT_S), f"{PREFIX}{uuid.uuid4().hex}/")


def entry(model_id: str, version: int = 1) -> ManifestEntry:
    return ManifestEntry(model_id=model_id, max_length=64, version=version, loaded_at=time.time())


def test_compare_and_set_writes_only_on_the_revision_it_read(store):
    start = store.read()
    assert start.generation == 0 and start.entries == {} and store.signature() == 0
    assert store.compare_and_set(0, {"a": entry("a")})
    first = store.read()
    assert sorted(first.entries) == ["a"] and first.generation > 0 and store.signature() == first.generation
    assert not store.compare_and_set(0, {"b": entry("b")})  # stale: the key moved since revision 0
    assert store.compare_and_set(first.generation, {"类别/模型": entry("类别/模型")})
    assert sorted(store.read().entries) == ["类别/模型"]


def test_racing_writers_lose_no_update(store, etcd):
    """Four writers, each adding its own entries by read-modify-compare-and-set through its own client."""

    def writer(name: str) -> None:
        mine = EtcdDesiredState(EtcdCluster(etcd.endpoints[::-1], NODE, TIMEOUT_S), store.key.removesuffix("desired"))
        for k in range(5):
            while True:
                state = mine.read()
                if mine.compare_and_set(state.generation, {**state.entries, f"{name}-{k}": entry(f"{name}-{k}")}):
                    break

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(store.read().entries) == 20


@pytest.mark.parametrize("beside", [False, True], ids=["check-first", "check-beside-the-forward"])
def test_a_load_through_one_service_is_seen_by_another_at_once(store, etcd, base_dir, models_root, beside):
    """Two nodes' services, each with its own engine, share the state: read-your-writes for load and unload,
    with the check before the forward (CPU) or beside it (GPU)."""
    make_training_output(models_root, "job", base_dir, OutputSpec(seed=3))
    services = [
        AdapterService(
            AdapterEngine(base_dir, models_root, device="cpu", dtype="float32"),
            EtcdDesiredState(EtcdCluster(endpoints, NODE, TIMEOUT_S), store.key.removesuffix("desired")),
            f"node{i}",
            100_000,
            max_adapters=8,
            check_beside=beside,
        )
        for i, endpoints in enumerate((etcd.endpoints, etcd.endpoints[::-1]))
    ]
    batch = [ClassifyRequest(["a text"], ["job"])]
    assert isinstance(services[1].classify_current(batch)[0], ModelNotLoaded)
    services[0].control({"op": "load", "model_dir": "job"})
    # Beside the forward, the forward misses the load, the check finds it, and the batch is classified again.
    [answer] = services[1].classify_current(batch)
    assert isinstance(answer, list) and answer[0].model_id == "job"
    services[1].control({"op": "unload", "model_id": "job"})
    assert isinstance(services[0].classify_current(batch)[0], ModelNotLoaded)
    assert not services[0].engine.is_loaded("job")


def test_one_member_down_changes_nothing_and_its_return_needs_no_new_login(store, etcd):
    assert store.compare_and_set(0, {"a": entry("a")})
    etcd.kill(0)  # the member every client tries first
    try:
        started = time.monotonic()
        assert sorted(store.read().entries) == ["a"]
        state = store.read()
        assert store.compare_and_set(state.generation, {**state.entries, "b": entry("b")})
        assert time.monotonic() - started < 10
    finally:
        etcd.restart(0)
    # The restarted member forgot the token it issued: the client logs in again by itself.
    alone = EtcdDesiredState(EtcdCluster(etcd.endpoints[:1], NODE, TIMEOUT_S), store.key.removesuffix("desired"))
    assert sorted(alone.read().entries) == ["a", "b"]
    generation = alone.signature()
    etcd.restart(0)
    assert sorted(alone.read().entries) == ["a", "b"]
    # The check before each batch keeps its connection open: one the restart closed is opened again at once,
    # not reported as etcd unreachable (which would serve a possibly stale state for that batch).
    etcd.restart(0)
    assert alone.signature() == generation


def test_every_member_down_is_backend_unavailable_within_a_bounded_time(etcd, store, base_dir, models_root):
    make_training_output(models_root, "job", base_dir, OutputSpec(seed=4))
    store = EtcdDesiredState(
        EtcdCluster(etcd.endpoints, NODE, TIMEOUT_S, budget_s=1.5), store.key.removesuffix("desired")
    )
    service = AdapterService(
        AdapterEngine(base_dir, models_root, device="cpu", dtype="float32"), store, "node0", 100_000, max_adapters=8
    )
    service.control({"op": "load", "model_dir": "job"})
    for i in range(3):
        etcd.kill(i)
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="etcd is unreachable"):
            store.read()
        # rounds over the members until the budget is spent; the last round may begin just before
        assert time.monotonic() - started < store.cluster.budget_s + 3 * TIMEOUT_S + 1
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            store.signature()  # the check before each batch: one quick round
        assert time.monotonic() - started < 3 * TIMEOUT_S
        for document in ({"op": "load", "model_dir": "job", "reload": True}, {"op": "unload", "model_id": "job"}):
            with pytest.raises(BackendUnavailable):
                service.control(document)
        assert service.engine.is_loaded("job")  # what the node last knew stays served
    finally:
        etcd.start()


def test_credentials_are_checked_and_a_reader_cannot_write(etcd, store):
    wrong = EtcdDesiredState(EtcdCluster(etcd.endpoints, Credentials(NODE.user, "wrong"), TIMEOUT_S), PREFIX)
    with pytest.raises(InternalError, match="refused this service's credentials.*authentication failed"):
        wrong.read()
    reader = EtcdDesiredState(EtcdCluster(etcd.endpoints, SHIM, TIMEOUT_S), store.key.removesuffix("desired"))
    assert reader.read().entries == {}
    with pytest.raises(InternalError, match="permission denied"):
        reader.compare_and_set(0, {"a": entry("a")})
    anonymous = EtcdDesiredState(EtcdCluster(etcd.endpoints, None, TIMEOUT_S), PREFIX)
    with pytest.raises(InternalError, match="etcd has authentication on: set ETCD_USER and ETCD_PASSWORD"):
        anonymous.read()


def test_a_single_node_manifest_imports_in_one_command(tmp_path, store):
    manifest = AdapterManifest(tmp_path / "state")
    assert manifest.compare_and_set(0, {"a": entry("a"), "team/b": entry("team/b", version=3)})
    assert import_manifest(manifest, store) == 2
    assert store.read().entries == manifest.read().entries
    with pytest.raises(SystemExit, match="already holds a desired state with 2 models"):
        import_manifest(manifest, store)
    assert manifest.compare_and_set(1, {"c": entry("c")})
    assert import_manifest(manifest, store, replace=True) == 1
    assert sorted(store.read().entries) == ["c"]
