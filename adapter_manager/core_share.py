"""Sharing a CPU node's cores among the Triton instances of one tritonserver.

Each CPU instance gets its share of the cores (TORCH_THREADS=0: cores / instances), which serves a full
queue best: while one instance runs Python (tokenizing, building responses), the other computes. A lone
request, though, would then compute on one core while the others idle: batch 1 in-process uses every core.
So a batch that starts while no other instance is computing takes every core; one that starts beside another
keeps its share.

Who is computing is one lock file in /dev/shm per tritonserver: an instance holds a shared flock on it while it
computes. An instance that can take it exclusively sees that no other one holds it. The test and the switch to
shared are not one atomic step; two instances starting at the same instant may both take every core for one
batch, which costs some speed and nothing else.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FOLDER = Path("/dev/shm")


class CoreShare:
    def __init__(self, server_pid: int, shared_threads: int, all_threads: int, folder: Path = LOCK_FOLDER) -> None:
        self.shared_threads, self.all_threads = shared_threads, all_threads
        self.path = folder / f"lora-classifier-computing-{server_pid}"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def enter(self) -> int:
        """Mark this instance as computing; the threads its batch should use."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        fcntl.flock(self._fd, fcntl.LOCK_SH)  # from exclusive, or wait out another's brief exclusive test
        return self.all_threads if alone else self.shared_threads

    def leave(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)  # instances still open keep their descriptor; the file is per server
