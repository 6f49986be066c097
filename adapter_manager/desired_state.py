"""Where a node keeps its desired state: the file manifest in STATE_DIR, or etcd for several nodes."""

from __future__ import annotations

from .manifest import AdapterManifest, DesiredStateStore
from .settings import Settings


def desired_state_store(settings: Settings) -> DesiredStateStore:
    """etcd when ETCD_ENDPOINTS is set, else the file manifest. The cluster layer (adapter_manager.etcd_state,
    lora_cluster: etcd3gw and requests) is imported only in the first case."""
    cluster = settings.etcd_cluster()
    if cluster is None:
        return AdapterManifest(settings.state_dir)
    from .etcd_state import EtcdDesiredState

    return EtcdDesiredState(cluster, settings.etcd_prefix)
