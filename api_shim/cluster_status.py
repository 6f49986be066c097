"""Status over every registered node (ETCD_ENDPOINTS set): the nodes come from the registry in etcd, and each
is asked directly, all at once, each with a short timeout.

A node that does not answer in time is `unreachable`; it never fails or slows the whole answer. Workers are
named `<node_id>/<name>` with the contract's names (`cuda0-0`, `cpu-0`) and carry `node_id`;
`pending_requests` and `models_traffic` are sums over the nodes; `service_status` is `running` while at least
one node is ready.
`loaded_models_count` is the desired state's, as a ready node reports it.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from lora_core.errors import AdapterError
from lora_cluster.node_registry import NodeRecord, NodeRegistry

from .gateway import TritonGateway
from .status import empty_status, merge_traffic, service_status

log = logging.getLogger(__name__)
NODE_STATES = {"running": "ready", "starting": "starting", "error": "unreachable"}


class ClusterStatus:
    def __init__(self, registry: NodeRegistry, control_token: str, timeout_s: float) -> None:
        self.registry = registry
        self.control_token = control_token
        self.timeout_s = timeout_s
        self._gateways: dict[str, TritonGateway] = {}
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = {**empty_status(), "nodes": []}
        try:
            nodes = self.registry.nodes()
        except AdapterError as exc:
            answer["message"] = f"the node registry is unreachable: {exc.message}"
            return answer
        if not nodes:
            answer["message"] = "no node is registered"
            return answer
        pool = ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="node-status")
        futures = {pool.submit(self._node_status, node): node for node in nodes}
        done, _ = wait(futures, timeout=self.timeout_s * 2 + 0.5)  # model state, then the rest
        pool.shutdown(wait=False, cancel_futures=True)  # a straggler ends on its own timeout
        loaded_counts = []
        traffic = []
        for future, node in futures.items():
            one: dict[str, Any] = (
                future.result() if future in done else {"service_status": "error", "message": "no answer in time"}
            )
            state = NODE_STATES.get(one["service_status"], "unreachable")
            entry = {"node_id": node.node_id, "triton_url": node.triton_url, "status": state}
            if one.get("message"):
                entry["message"] = one["message"]
            answer["nodes"].append(entry)
            for worker in one.get("workers", []):
                named = f"{node.node_id}/{worker['worker_id']}"
                answer["workers"].append({**worker, "worker_id": named, "node_id": node.node_id})
            answer["pending_requests"] += one.get("pending_requests", 0)
            traffic.append(one.get("models_traffic", []))
            if state == "ready":
                loaded_counts.append(one.get("loaded_models_count", 0))
        answer["total_workers"] = len(answer["workers"])
        answer["models_traffic"] = merge_traffic(traffic)
        answer["loaded_models_count"] = max(loaded_counts, default=0)
        states = {n["status"] for n in answer["nodes"]}
        answer["service_status"] = "running" if "ready" in states else "starting" if "starting" in states else "error"
        return answer

    def _node_status(self, node: NodeRecord) -> dict[str, Any]:
        try:
            return service_status(self._gateway(node.triton_url), node.metrics_url, metrics_timeout_s=self.timeout_s)
        except Exception as exc:  # one node's surprise never fails the whole status
            log.warning("status of node %s failed: %r", node.node_id, exc)
            return {"service_status": "error", "message": f"status failed: {type(exc).__name__}"}

    def _gateway(self, url: str) -> TritonGateway:
        with self._lock:
            gateway = self._gateways.get(url)
            if gateway is None:
                gateway = TritonGateway(url, self.timeout_s, control_token=self.control_token, stall_s=self.timeout_s)
                self._gateways[url] = gateway
            return gateway
