"""The shim's gunicorn worker: gthread, with three changes.

- **It drains.** The stock worker only stops accepting and keeps the listening socket open until its
  in-flight requests are done: meanwhile the kernel still completes new connections into the backlog, and
  they are reset when the socket finally closes. Closed at once, a new connection is refused outright (a
  client or balancer can go elsewhere at once), while the requests already taken finish within the graceful
  timeout (DRAIN_TIMEOUT_S).
- **It tells how long a request waited for a thread.** Connections wait in the thread pool's queue when
  every thread is busy; admission (api_shim/admission.py) counts that wait, so that no queue goes unseen.
- **It refuses without a thread.** While admission would refuse even a one-text predict, a connection whose
  whole request is a predict already in the socket is answered `429 overloaded` by the accept loop itself
  (api_shim/fast_refusal.py), so a refusal never queues behind the accepted requests that hold every thread.
  A new connection whose request has not arrived yet waits in the poller, not in the thread pool's queue.
"""

from __future__ import annotations

import selectors
import threading
import time
from collections import deque
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

from . import fast_refusal

_this_request = threading.local()


def thread_wait_s() -> float:
    """How long the request this thread is handling waited for the thread (0 outside gunicorn)."""
    return getattr(_this_request, "waited_s", 0.0)


def arrived_at() -> float | None:
    """When the request this thread is handling was handed to the thread pool (time.monotonic; None outside
    gunicorn)."""
    return getattr(_this_request, "arrived_at", None)


class ShimWorker(ThreadWorker):
    def init_process(self) -> None:
        # When each connection still waiting for a thread was handed to the pool, oldest first: the pool's
        # queue is FIFO, so the thread that starts next takes the oldest.
        self._waiting: deque[float] = deque()
        self._waiting_lock = threading.Lock()
        super().init_process()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # shutting down, not merely at worker_connections
            for listener in self.sockets:
                listener.close()

    def enqueue_req(self, conn) -> None:
        now = time.monotonic()
        if self.alive and self._shed(conn, now):
            return
        conn.enqueued_at = now
        with self._waiting_lock:
            self._waiting.append(now)
        super().enqueue_req(conn)

    def handle(self, conn):
        now = time.monotonic()
        with self._waiting_lock:
            if self._waiting:
                self._waiting.popleft()
        arrived = getattr(conn, "enqueued_at", now)
        _this_request.arrived_at = arrived
        _this_request.waited_s = now - arrived
        return super().handle(conn)

    # ------------------------------------------------------------------------- quick refusal

    def _shed(self, conn, now: float) -> bool:
        """Answer the connection's predict with 429 here, in the accept loop, when admission would refuse even
        one text now; True when the connection was dealt with."""
        admission = getattr(self.wsgi, "extensions", {}).get("admission")
        if admission is None or not admission.enabled:
            return False
        with self._waiting_lock:
            thread_wait = now - self._waiting[0] if self._waiting else 0.0
        verdict = admission.verdict(1, thread_wait)
        if verdict.admitted:
            return False
        outcome = fast_refusal.refuse_predict(conn.sock, verdict.refusal(admission.max_wait_s), now)
        if outcome is fast_refusal.Outcome.NO_DATA and not conn.initialized:
            self._wait_for_request(conn)  # a new connection: its request is still on the way
            return True
        if outcome is fast_refusal.Outcome.KEEP_ALIVE and len(self.keepalived_conns) < self.max_keepalived:
            conn.set_timeout()
            self.keepalived_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
            return True
        if outcome in (fast_refusal.Outcome.KEEP_ALIVE, fast_refusal.Outcome.CLOSE):
            self.nr_conns -= 1
            conn.close()
            return True
        return False  # not a whole predict: the thread pool serves it

    def _wait_for_request(self, conn) -> None:
        """As gunicorn does with a connection whose request did not come in time: the poller watches it."""
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
