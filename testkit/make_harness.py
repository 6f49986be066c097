"""`make serve` and `make cluster` run as a user runs them: in a process group of their own (as a terminal
runs them), their output in a file, ready once they print their URL, stopped with Ctrl-C's signal."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from .triton_harness import REPO


def free_block(size: int) -> int:
    """The first of `size` consecutive ports free on loopback, below the ephemeral range (where free_port's
    ports come from), so that make cluster's fixed offsets cannot meet them."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 32000 - size)
        sockets = []
        try:
            for port in range(first, first + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError("no block of free ports")


class MakeTarget:
    """`make <target>` with `settings` added to this environment."""

    def __init__(self, target: str, workdir: Path, settings: Mapping[str, str]) -> None:
        self.target = target
        self.workdir = workdir
        self.env = {**os.environ, **settings}
        self.log_path = workdir / f"{target}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> MakeTarget:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> MakeTarget:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", self.target],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process is not None and self.process.poll() is None, (
                f"make {self.target} exited ({self.process and self.process.returncode}):\n{self.output()[-4000:]}"
            )
            assert time.monotonic() < deadline, f"{what} not within {timeout} s:\n{self.output()[-4000:]}"
            time.sleep(0.2)

    def wait_ready(self, timeout: float = 300) -> None:
        """A user waits for the URL line; so does this."""
        self.wait_for(lambda: "ready at" in self.output(), timeout, f"make {self.target}'s ready line")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, timeout: float = 120) -> None:
        """Ctrl-C, then (if it hangs) SIGKILL to everything it started: every supervised child has a process
        group of its own, so the group's signal alone would not reach them."""
        if self.process is None or self.process.poll() is not None:
            return
        descendants = self.descendants()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in descendants:
                try:
                    child.kill()
                except psutil.Error:
                    pass
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
