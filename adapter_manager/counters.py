"""Counts summed in memory and sent on a timer, off the serving path.

In the backend stub each metric update is a round trip to tritonserver: sent from `execute`, the per-model
counts of a batch cost the batch one round trip per (metric, model), about a fifth of the stub's CPU per request
with 1-text requests on a small encoder (bench/levers.md). Counted here instead, they are sent by a thread of
their own at most every `interval_s`, and at once by `close`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class PendingCounts:
    """`add` from the serving path (a dict update under a lock); `send(key, count)` from the flusher thread."""

    def __init__(self, send: Callable[[Hashable, int], None], interval_s: float = 1.0) -> None:
        self._send = send
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one sender at a time: the thread or close
        self._pending: Counter = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PendingCounts:
        self._thread = threading.Thread(target=self._run, name="metric-counts", daemon=True)
        self._thread.start()
        return self

    def add(self, counts: Counter[Hashable]) -> None:
        if counts:
            with self._lock:
                self._pending.update(counts)

    def flush(self) -> None:
        """Send what is pending now. A count whose send failed, and those after it, wait for the next flush."""
        with self._send_lock:
            with self._lock:
                counts, self._pending = self._pending, Counter()
            items = list(counts.items())
            for done, (key, count) in enumerate(items):
                try:
                    self._send(key, count)
                except Exception:
                    log.exception("sending a metric count failed; %d kept for the next flush", len(items) - done)
                    with self._lock:
                        self._pending.update(dict(items[done:]))
                    return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
