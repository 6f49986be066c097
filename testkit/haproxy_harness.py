"""Test harness for HAProxy (Debian's haproxy 2.6) in front of tritonservers, configured by
lora_cluster.haproxy_config: a data port for predicts and a control port for control operations."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from lora_cluster.haproxy_config import HEALTH_URI, render
from testkit.process_harness import ManagedProcess, free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxy:
    def __init__(self, workdir: Path, nodes: Sequence[tuple[str, str]]) -> None:
        self.workdir = workdir
        self.data_port, self.control_port = free_port(), free_port()
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(
            render(f"127.0.0.1:{self.data_port}", f"127.0.0.1:{self.control_port}", nodes), encoding="utf-8"
        )
        self.process = ManagedProcess(workdir / "haproxy.log")

    @property
    def data_url(self) -> str:
        return f"127.0.0.1:{self.data_port}"

    @property
    def control_url(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    def start(self, timeout: float = 30) -> None:
        # -db: stay in the foreground, so the harness owns the process (and stops it)
        command = [HAPROXY, "-db", "-f", str(self.config)]
        self.process.start(command, dict(os.environ), f"http://{self.data_url}{HEALTH_URI}", timeout)

    def stop(self) -> None:
        self.process.stop(grace=10)
