"""Which nodes serve, from etcd: each node's entry lives under a lease, so a node that dies leaves the registry
within the lease's TTL.

An entry, at `<prefix>nodes/<node_id>`, says how to reach the node's Triton (HTTP `host:port` and metrics URL,
as the node advertises them: reachable from the shim), its devices, and the desired-state revision its model
instances have all applied. The node agent (`lora_cluster.node_agent`) writes it; the shim reads it for status.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .etcd import EtcdCluster, b64, prefix_end, unb64


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    triton_url: str  # host:port of the node's Triton HTTP endpoint
    metrics_url: str
    devices: tuple[str, ...]  # GPU UUIDs, or ("cpu",)
    applied_revision: int | None  # None while no model instance has reported one
    updated_at: float

    @classmethod
    def parse(cls, raw: bytes) -> NodeRecord | None:
        """An entry as stored, or None when it is not one (written by something else)."""
        try:
            fields = json.loads(raw)
            applied = fields["applied_revision"]
            return cls(
                node_id=str(fields["node_id"]),
                triton_url=str(fields["triton_url"]),
                metrics_url=str(fields["metrics_url"]),
                devices=tuple(str(d) for d in fields["devices"]),
                applied_revision=None if applied is None else int(applied),
                updated_at=float(fields["updated_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def encode(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class NodeRegistry:
    def __init__(self, cluster: EtcdCluster, prefix: str) -> None:
        self.cluster = cluster
        self.prefix = f"{prefix}nodes/"

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, sorted by id (a linearizable read)."""
        answer = self.cluster.post("kv/range", {"key": b64(self.prefix), "range_end": prefix_end(self.prefix)})
        records = [NodeRecord.parse(unb64(kv.get("value", ""))) for kv in answer.get("kvs") or []]
        return sorted((r for r in records if r is not None), key=lambda r: r.node_id)

    def grant(self, ttl_s: int) -> int:
        """A new lease of `ttl_s` seconds; its id."""
        return int(self.cluster.post("lease/grant", {"TTL": ttl_s})["ID"])

    def keep_alive(self, lease: int) -> bool:
        """Renew the lease; False when it has already expired (the node must register again)."""
        answer = self.cluster.post("lease/keepalive", {"ID": lease})
        return int((answer.get("result") or {}).get("TTL", 0)) > 0

    def put(self, record: NodeRecord, lease: int) -> None:
        key = f"{self.prefix}{record.node_id}"
        self.cluster.post("kv/put", {"key": b64(key), "value": b64(record.encode()), "lease": lease})

    def revoke(self, lease: int) -> None:
        """End the lease now: the node leaves the registry at once (a clean shutdown)."""
        self.cluster.post("lease/revoke", {"ID": lease})
