"""Test harness for the REST shim under a real gunicorn, talking HTTP."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from testkit.process_harness import ManagedProcess
from testkit.process_harness import free_port
from testkit.triton_harness import REPO


class ShimServer:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "API_PORT": str(self.port), "API_HOST": "127.0.0.1"}
        self.server = ManagedProcess(workdir / f"gunicorn-{self.port}.log")

    @property
    def origin(self) -> str:
        """Where the pages and /metrics are: the scheme, host and port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.origin}/api/v1"

    def start(self, timeout: float = 60) -> None:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        command = [gunicorn, "-c", str(REPO / "api_shim" / "gunicorn.conf.py"), "api_shim.wsgi:app"]
        self.server.start(command, self.env, f"{self.base}/health/live", timeout, cwd=REPO)

    def stop(self) -> None:
        self.server.stop()
