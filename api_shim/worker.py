"""The shim's gunicorn worker: gthread, with two changes.

- **It drains.** The stock worker only stops accepting and keeps the listening socket open until its
  in-flight requests are done: meanwhile the kernel still completes new connections into the backlog, and
  they are reset when the socket finally closes. Closed at once, a new connection is refused outright (a
  client or balancer can go elsewhere at once), while the requests already taken finish within the graceful
  timeout (DRAIN_TIMEOUT_S).
- **It tells how long a request waited for a thread.** Connections wait in the thread pool's queue when
  every thread is busy; admission (api_shim/admission.py) counts that wait, so that no queue goes unseen.
"""

from __future__ import annotations

import threading
import time

from gunicorn.workers.gthread import ThreadWorker

_this_request = threading.local()


def thread_wait_s() -> float:
    """How long the request this thread is handling waited for the thread (0 outside gunicorn)."""
    return getattr(_this_request, "waited_s", 0.0)


class ShimWorker(ThreadWorker):
    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # shutting down, not merely at worker_connections
            for listener in self.sockets:
                listener.close()

    def enqueue_req(self, conn) -> None:
        conn.enqueued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):
        _this_request.waited_s = time.monotonic() - getattr(conn, "enqueued_at", time.monotonic())
        return super().handle(conn)
