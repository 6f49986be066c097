"""Test harness for the REST shim under a real gunicorn, talking HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from triton_harness import REPO, free_port


class ShimServer:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "API_PORT": str(self.port), "API_HOST": "127.0.0.1"}
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self, timeout: float = 60) -> None:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        command = [gunicorn, "-c", str(REPO / "api_shim" / "gunicorn.conf.py"), "api_shim.wsgi:app"]
        log = self.log_path.open("a")
        self.process = subprocess.Popen(command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.base}/health/live", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn not answering after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
