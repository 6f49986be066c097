"""BackendWatch: calls to a dead or hung Triton fail fast, so such a backend cannot hold every shim thread.

A dead Triton refuses connections at once; a hung one accepts them and never answers, so every call would
wait its whole timeout. The watch keeps, per process, what the shim has seen of Triton:

- a call that failed to reach Triton marks it down;
- a call in flight for longer than `stall_s` makes it suspect (a long predict can take that long, too);
- while Triton is down or suspect, a call first probes Triton's liveness endpoint (one probe at a time, at
  most one a second, `probe_timeout_s` each). If Triton does not answer, the call fails at once with
  503 backend_unavailable instead of joining the wait.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator

import requests

from lora_core.errors import BackendUnavailable

PROBE_INTERVAL_S = 1.0


class BackendWatch:
    def __init__(
        self,
        live_url: str,
        stall_s: float,
        probe_timeout_s: float = 1.0,
        probe: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live_url = live_url
        self.stall_s = stall_s
        self.probe_timeout_s = probe_timeout_s
        self._probe = probe or self._probe_live
        self._clock = clock
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._ids = itertools.count()
        self._in_flight: dict[int, float] = {}  # call id -> when it started
        self._down = False
        self._last_probe_at = float("-inf")
        self._last_probe_ok = True

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one call to Triton: refuse it at once when Triton is known not to answer."""
        self._admit()
        call_id = next(self._ids)
        with self._lock:
            self._in_flight[call_id] = self._clock()
        try:
            yield
        finally:
            with self._lock:
                del self._in_flight[call_id]

    def failed(self) -> None:
        """A call could not reach Triton (refused, reset, timed out)."""
        with self._lock:
            self._down = True

    def succeeded(self) -> None:
        with self._lock:
            self._down = False

    # ------------------------------------------------------------------------------------------

    def _suspect(self) -> bool:
        with self._lock:
            oldest = min(self._in_flight.values(), default=None)
            return self._down or (oldest is not None and self._clock() - oldest > self.stall_s)

    def _admit(self) -> None:
        if not self._suspect():
            return
        with self._probe_lock:  # one probe at a time; the others take its answer
            if self._clock() - self._last_probe_at >= PROBE_INTERVAL_S:
                self._last_probe_ok = self._probe()
                self._last_probe_at = self._clock()
                if self._last_probe_ok:
                    self.succeeded()
            answered = self._last_probe_ok
        if not answered:
            raise BackendUnavailable(f"Triton does not answer its health endpoint ({self.live_url})")

    def _probe_live(self) -> bool:
        try:
            return requests.get(self.live_url, timeout=self.probe_timeout_s).status_code == 200
        except requests.RequestException:
            return False
