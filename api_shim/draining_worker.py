"""gunicorn's gthread worker, closing its listening sockets as soon as it starts a graceful shutdown.

The stock worker only stops accepting and keeps the listening socket open until its in-flight requests are
done: meanwhile the kernel still completes new connections into the backlog, and they are reset when the
socket finally closes. Closed at once, a new connection is refused outright (a client or balancer can go
elsewhere at once), while the requests already taken finish within the graceful timeout (DRAIN_TIMEOUT_S).
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class DrainingThreadWorker(ThreadWorker):
    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # shutting down, not merely at worker_connections
            for listener in self.sockets:
                listener.close()
