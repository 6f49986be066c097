"""Test harness for a real etcd cluster (Debian's etcd-server 3.4) on loopback ports, authentication on.

    with EtcdMembers(tmp_path, count=3) as etcd:
        etcd.enable_auth({"node": NODE_PASSWORD}, {"shim": SHIM_PASSWORD})
        etcd.endpoints          # ["http://127.0.0.1:p0", ...]
        etcd.kill(0); etcd.restart(0)

Members start together (each becomes healthy only once a quorum is up), keep their data directories across
a restart, and compact their history every hour (auto-compaction, as in deployment).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from lora_cluster.etcd import enable_auth
from testkit.process_harness import ManagedProcess, free_port
from testkit.tls import Certificates

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ROOT_PASSWORD = "root-" + uuid.uuid4().hex
PREFIX = "/lora-classifier/"


class EtcdMembers:
    """`count` members on loopback ports. With `tls`, clients reach them over https with a certificate of
    their own (--client-cert-auth); health is checked on a plain-http metrics port either way."""

    def __init__(self, workdir: Path, count: int = 3, tls: Certificates | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.names = [f"etcd{i}" for i in range(count)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.metrics_ports = [free_port() for _ in self.names]
        self.processes = [ManagedProcess(workdir / f"{name}.log") for name in self.names]
        self.token = f"lora-test-{uuid.uuid4().hex[:8]}"

    @property
    def endpoints(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://127.0.0.1:{port}" for port in self.client_ports]

    def health_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[i]}/health"

    def __enter__(self) -> EtcdMembers:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        """Start every member that is not running, and wait until each is healthy."""
        for i, managed in enumerate(self.processes):
            if managed.process is None or managed.process.poll() is not None:
                self._launch(i)
        for i in range(len(self.names)):
            self.processes[i].wait_ready(self.health_url(i), timeout)

    def _launch(self, i: int) -> None:
        cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports, strict=True))
        command = [
            ETCD,
            f"--name={self.names[i]}",
            f"--data-dir={self.workdir / self.names[i]}",
            f"--listen-client-urls={self.endpoints[i]}",
            f"--advertise-client-urls={self.endpoints[i]}",
            f"--listen-peer-urls=http://127.0.0.1:{self.peer_ports[i]}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer_ports[i]}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-token={self.token}",
            "--initial-cluster-state=new",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            # 2 busy cores: a longer election timeout than the default 1 s keeps the leader from flapping.
            "--heartbeat-interval=200",
            "--election-timeout=2000",
            "--logger=zap",
            "--log-level=warn",
            f"--listen-metrics-urls={self.health_url(i).removesuffix('/health')}",
        ]
        if self.tls is not None:
            command += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca_cert}",
                "--client-cert-auth",
            ]
        self.processes[i].launch(command, dict(os.environ))

    def kill(self, i: int) -> None:
        """SIGKILL member `i` (its data stays)."""
        process = self.processes[i].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart(self, i: int, timeout: float = 60) -> None:
        self.kill(i)
        self._launch(i)
        self.processes[i].wait_ready(self.health_url(i), timeout)

    def stop(self) -> None:
        for process in self.processes:
            process.stop(grace=10)

    def enable_auth(self, writers: dict[str, str], readers: dict[str, str] | None = None) -> None:
        """Users with read-write (`writers`) or read-only (`readers`) access to PREFIX, a root user, and
        authentication on: from then on every call needs a user's token."""
        enable_auth(self.endpoints[0], ROOT_PASSWORD, writers, readers or {}, PREFIX)
