"""What every gunicorn worker of one shim knows of the node's load, in one piece of shared memory.

Admission (api_shim/admission.py) must judge the node's queue, not a guess per worker: the texts admitted and
not yet answered, and the waits that requests really had. Those live here, in a small file-backed mapping made
by gunicorn's master before it forks (`create`, from gunicorn.conf.py), so every worker sees the same numbers
from its first request on. A worker takes a slot for its own in-flight count (`NodeLoad.claim`); the master
clears a dead worker's slot (`release`), so work a crashed worker never finished is not counted forever.

Updates take a POSIX record lock on the mapping's file (released by the kernel if its holder dies) and, since
such a lock does not exclude the threads of one process, a thread lock too. Each update is a few field writes.
Times are `time.monotonic()`: CLOCK_MONOTONIC is one clock for every process of the machine.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SLOTS = 256  # gunicorn workers of one shim alive at once (a restarted worker takes a free slot)
WAITS = 256  # the last waits measured, one per answered predict
DRAINS = 64  # the last waits of predicts that had work queued ahead of them


class _Slot(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_int64), ("texts", ctypes.c_int64)]


class _Wait(ctypes.Structure):
    # at: when the predict was answered; thread_s: its wait for a worker thread; triton_s: its wait in Triton
    # (from sending it to its batch's start); ahead: texts queued ahead of it beyond what runs at once when it
    # was judged; judged_s: its wait from being judged to its batch's start.
    _fields_ = [
        ("at", ctypes.c_double),
        ("thread_s", ctypes.c_double),
        ("triton_s", ctypes.c_double),
        ("ahead", ctypes.c_double),
        ("judged_s", ctypes.c_double),
    ]


class _Shared(ctypes.Structure):
    _fields_ = [
        ("capacity", ctypes.c_int64),  # texts that run at once (Triton's instances x max_batch_size); 0: unknown
        ("slots", _Slot * SLOTS),
        ("texts_total", ctypes.c_int64),  # the sum of the slots' texts, kept with them (read on every predict)
        ("waits", _Wait * WAITS),
        ("waits_count", ctypes.c_int64),  # ever recorded; the ring's next index is this modulo WAITS
        ("drains", _Wait * DRAINS),
        ("drains_count", ctypes.c_int64),
    ]


@dataclass(frozen=True)
class Wait:
    at: float
    thread_s: float
    triton_s: float
    ahead: float
    judged_s: float  # from being judged (in the accept loop, or in its route) to its batch's start

    @property
    def total_s(self) -> float:
        return self.thread_s + self.triton_s


class NodeLoad:
    """The node's shared load: in-flight texts per worker, the capacity, and the recent waits."""

    def __init__(self, fd: int, memory: mmap.mmap) -> None:
        self._fd = fd
        self._memory = memory
        self._shared = _Shared.from_buffer(memory)
        self._thread_lock = threading.Lock()
        self._slot = -1
        self._slot_pid = 0

    @classmethod
    def create(cls) -> NodeLoad:
        """A fresh, zeroed mapping. The file is unlinked at once: the descriptor and mapping are all it needs,
        and forked workers inherit both."""
        directory = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="lora-shim-load-", dir=directory)
        os.unlink(path)
        os.ftruncate(fd, ctypes.sizeof(_Shared))
        return cls(fd, mmap.mmap(fd, ctypes.sizeof(_Shared)))

    @property
    def unlocked(self) -> _Shared:
        """The shared fields, to read without the lock where a value a moment old will do."""
        return self._shared

    @contextmanager
    def locked(self) -> Iterator[_Shared]:
        with self._thread_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield self._shared
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    # --------------------------------------------------------------------------------- slots

    def claim(self) -> None:
        """Take a slot for this process's in-flight texts (once per process; again after a fork)."""
        pid = os.getpid()
        if self._slot_pid == pid:
            return
        with self.locked() as shared:
            for index, slot in enumerate(shared.slots):
                if slot.pid in (0, pid):
                    shared.texts_total -= slot.texts
                    slot.pid, slot.texts = pid, 0
                    self._slot, self._slot_pid = index, pid
                    return
        raise RuntimeError(f"no free slot for worker {pid}: more than {SLOTS} workers share one shim")

    def release(self, pid: int) -> None:
        """Forget a worker that ended (the master calls this): its in-flight texts no longer count."""
        with self.locked() as shared:
            for slot in shared.slots:
                if slot.pid == pid:
                    shared.texts_total -= slot.texts
                    slot.pid, slot.texts = 0, 0

    def add_texts(self, shared: _Shared, texts: int) -> None:
        """This worker's in-flight texts change by `texts` (call under `locked`)."""
        if self._slot_pid != os.getpid():
            raise RuntimeError("NodeLoad.claim() was not called in this process")
        shared.slots[self._slot].texts += texts
        shared.texts_total += texts

    @staticmethod
    def texts_in_flight(shared: _Shared) -> int:
        return shared.texts_total

    # --------------------------------------------------------------------------------- waits

    @staticmethod
    def record(shared: _Shared, wait: Wait) -> None:
        """One answered predict's wait; a predict that had texts queued ahead also teaches the drain."""
        _append(shared.waits, WAITS, shared, "waits_count", wait)
        if wait.ahead > 0:
            _append(shared.drains, DRAINS, shared, "drains_count", wait)

    @staticmethod
    def recent_waits(shared: _Shared, since: float) -> list[Wait]:
        return _recent(shared.waits, WAITS, shared.waits_count, lambda w: w.at >= since)

    @staticmethod
    def latest_wait(shared: _Shared) -> Wait | None:
        if not shared.waits_count:
            return None
        return _as_wait(shared.waits[(shared.waits_count - 1) % WAITS])

    @staticmethod
    def recent_drains(shared: _Shared, since: float) -> list[Wait]:
        return _recent(shared.drains, DRAINS, shared.drains_count, lambda w: w.at >= since)


def _append(ring, size: int, shared: _Shared, counter: str, wait: Wait) -> None:
    count = getattr(shared, counter)
    entry = ring[count % size]
    entry.at, entry.thread_s, entry.triton_s = wait.at, wait.thread_s, wait.triton_s
    entry.ahead, entry.judged_s = wait.ahead, wait.judged_s
    setattr(shared, counter, count + 1)


def _recent(ring, size: int, count: int, keep: Callable[[Wait], bool]) -> list[Wait]:
    """The ring's entries, newest first, as long as `keep` holds."""
    found = []
    for back in range(min(count, size)):
        wait = _as_wait(ring[(count - 1 - back) % size])
        if not keep(wait):
            break
        found.append(wait)
    return found


def _as_wait(entry: _Wait) -> Wait:
    return Wait(entry.at, entry.thread_s, entry.triton_s, entry.ahead, entry.judged_s)


# The node's load as the gunicorn master made it before forking; None in a process that no master prepared
# (a Flask test client, a tool): the app then makes one of its own.
_prepared: NodeLoad | None = None


def prepare() -> NodeLoad:
    """In gunicorn's master, before any worker is forked."""
    global _prepared
    _prepared = NodeLoad.create()
    return _prepared


def prepared() -> NodeLoad | None:
    return _prepared
