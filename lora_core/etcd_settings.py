"""The settings that say how a process reaches etcd, shared by the model, the shim and the node agent.

Standard library only: every process reads these settings, while the etcd client itself (lora_cluster.etcd,
which needs etcd3gw and requests) is imported only where ETCD_ENDPOINTS names a cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .settings import setting

if TYPE_CHECKING:
    from lora_cluster.etcd import EtcdCluster


@dataclass(frozen=True)
class EtcdSettings:
    """How a process reaches etcd: the same settings, by the same names, in the model, the shim and the agent."""

    etcd_endpoints: str = setting("ETCD_ENDPOINTS")
    etcd_user: str = setting("ETCD_USER")
    etcd_password: str = setting("ETCD_PASSWORD")
    etcd_prefix: str = setting("ETCD_PREFIX")
    etcd_timeout_s: float = setting("ETCD_TIMEOUT_S")
    etcd_ca_cert: str = setting("ETCD_CA_CERT")
    etcd_cert: str = setting("ETCD_CERT")
    etcd_key: str = setting("ETCD_KEY")

    def check_etcd(self) -> None:
        """Validation, for the __post_init__ of each settings class built on this one."""
        if not self.etcd_timeout_s > 0:
            raise ValueError(f"ETCD_TIMEOUT_S must be > 0, got {self.etcd_timeout_s}")
        if self.etcd_endpoints and not (self.etcd_prefix.startswith("/") and self.etcd_prefix.endswith("/")):
            raise ValueError(f"ETCD_PREFIX must start and end with '/', got {self.etcd_prefix!r}")
        if bool(self.etcd_cert) != bool(self.etcd_key):
            raise ValueError("ETCD_CERT and ETCD_KEY go together: set both or neither")
        for name, path in (
            ("ETCD_CA_CERT", self.etcd_ca_cert),
            ("ETCD_CERT", self.etcd_cert),
            ("ETCD_KEY", self.etcd_key),
        ):
            if path and not os.path.isfile(path):
                raise ValueError(f"{name} names no file: {path!r}")

    def etcd_cluster(self, budget_s: float | None = None) -> EtcdCluster | None:
        """The cluster these settings name, or None when ETCD_ENDPOINTS is empty (the cluster layer, and its
        packages, are imported only then)."""
        endpoints = [e.strip() for e in self.etcd_endpoints.split(",") if e.strip()]
        if not endpoints:
            return None
        from lora_cluster.etcd import Credentials, EtcdCluster, TlsFiles

        credentials = Credentials(self.etcd_user, self.etcd_password) if self.etcd_user else None
        tls = TlsFiles(self.etcd_ca_cert, self.etcd_cert, self.etcd_key)
        return EtcdCluster(endpoints, credentials, self.etcd_timeout_s, budget_s, tls=tls)
