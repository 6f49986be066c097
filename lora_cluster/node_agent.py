"""The node agent: registers one node in etcd under a lease and keeps its entry current.

    python -m lora_cluster.node_agent        # settings from the environment (NodeAgentSettings)

Why a process of its own: registration is once per node, and a node runs several model instances (one per GPU,
or more), each a separate process inside Triton; none of them is "the node". The agent sits beside tritonserver
(the same supervisor in `make cluster`, the same pod or compose service in deployment). Every NODE_REPORT_S it
reads the node's own Triton metrics: the desired-state revision each model instance has applied (the least is
the node's) and the GPUs. It renews the lease, and rewrites the entry when either has changed. If the agent dies,
the lease lapses within NODE_LEASE_TTL_S and the node leaves the registry; on SIGTERM it revokes the lease and the
node leaves at once.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace

from lora_core.errors import AdapterError
from lora_core.etcd_settings import EtcdSettings
from lora_core.metric_names import LORA_DESIRED_STATE_GENERATION, NV_GPU_MEMORY_TOTAL_BYTES
from lora_core.prometheus import read_metrics
from lora_core.settings import load_settings, setting

from .node_registry import NodeRecord, NodeRegistry

log = logging.getLogger("lora_cluster.node_agent")


@dataclass(frozen=True)
class NodeAgentSettings(EtcdSettings):  # ETCD_* (required): the registry; the user needs write access
    node_id: str = setting("NODE_ID")
    triton_url: str = setting("NODE_TRITON_URL")
    metrics_url: str = setting("NODE_METRICS_URL")
    lease_ttl_s: int = setting("NODE_LEASE_TTL_S")
    report_s: float = setting("NODE_REPORT_S")

    def __post_init__(self) -> None:
        for name in ("triton_url", "metrics_url", "etcd_endpoints"):
            if not getattr(self, name):
                raise ValueError(f"{'NODE_' if name != 'etcd_endpoints' else ''}{name.upper()} is required")
        if not 0 < self.report_s < self.lease_ttl_s / 2:
            raise ValueError("NODE_REPORT_S must be above 0 and under half of NODE_LEASE_TTL_S")
        self.check_etcd()


class NodeAgent:
    def __init__(self, settings: NodeAgentSettings, registry: NodeRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.node_id = settings.node_id or socket.gethostname()
        self._stop = threading.Event()
        self._lease: int | None = None
        self._written: NodeRecord | None = None
        self._failing = False

    def observe(self) -> NodeRecord:
        """This node as its Triton's metrics show it now; revision None while Triton does not answer."""
        applied: int | None = None
        devices: tuple[str, ...] = ("cpu",)
        try:
            metrics = read_metrics(self.settings.metrics_url)
        except AdapterError:
            pass
        else:
            revisions = metrics.by_label(LORA_DESIRED_STATE_GENERATION, "instance")
            applied = int(min(revisions.values())) if revisions else None
            gpus = sorted(metrics.by_label(NV_GPU_MEMORY_TOTAL_BYTES, "gpu_uuid"))
            devices = tuple(gpus) or ("cpu",)
        settings = self.settings
        return NodeRecord(self.node_id, settings.triton_url, settings.metrics_url, devices, applied, time.time())

    def report_once(self) -> None:
        """Renew the lease (or take a new one) and write the entry if it changed."""
        record = self.observe()
        if self._lease is None or not self.registry.keep_alive(self._lease):
            self._lease = self.registry.grant(self.settings.lease_ttl_s)
            self._written = None
        if self._written is None or replace(self._written, updated_at=0) != replace(record, updated_at=0):
            self.registry.put(record, self._lease)
            self._written = record

    def run(self) -> None:
        log.info("node %s: registering %s in etcd", self.node_id, self.settings.triton_url)
        while not self._stop.is_set():
            try:
                self.report_once()
                if self._failing:
                    log.warning("node %s: etcd reachable again; registered", self.node_id)
                self._failing = False
            except AdapterError as exc:
                if not self._failing:
                    log.error("node %s: cannot register in etcd: %s", self.node_id, exc.message)
                self._failing = True
            self._stop.wait(self.settings.report_s)
        self._leave()

    def stop(self) -> None:
        self._stop.set()

    def _leave(self) -> None:
        if self._lease is None:
            return
        try:
            self.registry.revoke(self._lease)
            log.info("node %s: left the registry", self.node_id)
        except AdapterError as exc:  # the lease lapses by itself
            ttl = self.settings.lease_ttl_s
            log.warning("node %s: could not revoke its lease (%s); it lapses in %d s", self.node_id, exc, ttl)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(NodeAgentSettings)
    except ValueError as exc:
        sys.exit(f"node agent: {exc}")
    cluster = settings.etcd_cluster()
    assert cluster is not None  # ETCD_ENDPOINTS is required (NodeAgentSettings)
    registry = NodeRegistry(cluster, settings.etcd_prefix)
    agent = NodeAgent(settings, registry)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
