"""Server processes for integration tests: started in their own session, output to a log file, polled
until an HTTP endpoint answers 200, stopped with SIGTERM (SIGKILL after a grace period)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from collections.abc import Callable

import requests


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ok(url: str, process: subprocess.Popen, timeout: float, log_tail: Callable[[], str]) -> None:
    """Poll `url` until it answers 200; fail with the log if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log_tail()}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not answering after {timeout}s:\n{log_tail()}")


class ManagedProcess:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(
        self, command: list[str], env: dict[str, str], ready_url: str, timeout: float, cwd: Path | None = None
    ) -> None:
        self.launch(command, env, cwd)
        self.wait_ready(ready_url, timeout)

    def launch(self, command: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        """Start the process without waiting (members of a cluster are ready only once enough have started)."""
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, ready_url: str, timeout: float) -> None:
        assert self.process is not None, "launch() first"
        try:
            wait_until_ok(ready_url, self.process, timeout, self.log_tail)
        except RuntimeError:
            self.stop()
            raise

    def stop(self, grace: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
