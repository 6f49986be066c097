"""Admission: a predict is refused at once (429 overloaded) when the work already admitted would keep it
waiting longer than ADMISSION_MAX_WAIT_S, instead of queueing without bound in Triton.

The limit is a waiting time, not a count, so that one default holds on a CPU and on a GPU 100x faster. Each
gunicorn worker estimates its own expected wait: the texts it has in flight times the seconds per text it
measured over its busy time (texts completed / seconds with something in flight). Texts, not characters:
weighing texts by their characters refused no fewer on mixed lengths (bench/mixed.py), and a long text's
cost stops growing where the model truncates it, which the shim does not know. Workers share Triton in
proportion to what they send, so each worker's own
estimate is the service's. A request that already waited for a worker thread (gunicorn's queue,
api_shim/worker.py) counts that wait against the limit too.

The seconds per text come from the last WINDOWS windows of busy time (their busy-weighted mean), so the
estimate follows the service within a few seconds when it slows down (a flood's own clients take CPU from it
on a shared machine) or speeds up, and one window of long texts does not swing it. Measured on mixed lengths
and a 256-client flood (bench/levers.md): the last 2 windows refused 6.6% of 32 mixed-length clients'
requests; the last 8 refused none, with the flood's accepted p99 at 1.6-1.9 s; the best of the last 8 let a
flood's first requests wait 4 s. A worker that measured its speed while lightly used, batching little,
thinks it slower than it is; it then admits what it believes is a full second of work, more than enough to
fill Triton's batches, and its next windows measure the real speed.

Nothing in flight admits anything: a request larger than the limit alone is served, never refused forever.
Until its first window of busy time closes, a worker has no estimate and admits everything: a service that
just started is not refused to its first clients, and Triton's own queue bound still holds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lora_core.errors import Overloaded

# The estimate's windows: each covers this much busy time, and the last WINDOWS of them count.
WINDOW_S = 1.0
WINDOWS = 8


class Admission:
    def __init__(self, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0  # work admitted and not yet answered
        self._last_event = clock()
        self._busy_s = 0.0  # the open window: busy seconds and the work completed in them
        self._work = 0
        self._windows: deque[tuple[float, int]] = deque(maxlen=WINDOWS)  # (busy seconds, work), closed ones

    @contextmanager
    def admit(self, work: int, waited_s: float = 0.0) -> Iterator[None]:
        """Admit a predict of `work` texts (it waited `waited_s` for a thread) for the duration of the block, or
        raise Overloaded. A predict that fails still leaves; only completed ones teach the estimate."""
        self._enter(work, waited_s)
        completed = 0
        try:
            yield
            completed = work
        finally:
            self._leave(work, completed)

    def expected_wait_s(self) -> float | None:
        """Seconds a new request would wait behind the work in flight; None before any estimate."""
        with self._lock:
            return self._expected_wait_locked()

    # ------------------------------------------------------------------------------------ internals

    def _enter(self, work: int, waited_s: float) -> None:
        with self._lock:
            expected = self._expected_wait_locked() if self._in_flight > 0 else None
            if expected is not None and expected + waited_s > self.max_wait_s:
                raise Overloaded(
                    f"the service is overloaded: a new request would wait about {expected + waited_s:.1f} s, "
                    f"more than the {self.max_wait_s:g} s it accepts",
                    retry_after_s=math.ceil(expected),
                )
            self._advance()
            self._in_flight += work

    def _leave(self, work: int, completed: int) -> None:
        with self._lock:
            self._advance()
            self._in_flight -= work
            if not completed:
                # A failure says nothing of the speed: a hung or restarting Triton would leave its whole
                # outage in the window as busy time, and the service would refuse for a while once back.
                self._busy_s, self._work = 0.0, 0
                return
            self._work += completed
            if self._busy_s >= WINDOW_S:
                self._windows.append((self._busy_s, self._work))
                self._busy_s, self._work = 0.0, 0

    def _advance(self) -> None:
        """Count the time since the last event as busy when something was in flight."""
        now = self._clock()
        if self._in_flight > 0:
            self._busy_s += now - self._last_event
        self._last_event = now

    def _expected_wait_locked(self) -> float | None:
        if not self._windows:
            return None
        busy_s = sum(busy for busy, _ in self._windows)
        return self._in_flight * busy_s / sum(work for _, work in self._windows)
