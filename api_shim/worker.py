"""The shim's gunicorn worker: gthread, with three changes.

- **It drains.** The stock worker only stops accepting and keeps the listening socket open until its
  in-flight requests are done: meanwhile the kernel still completes new connections into the backlog, and
  they are reset when the socket finally closes. Closed at once, a new connection is refused outright (a
  client or balancer can go elsewhere at once), while the requests already taken finish within the graceful
  timeout (DRAIN_TIMEOUT_S).
- **It tells how long a request waited for a thread.** Connections wait in the thread pool's queue when
  every thread is busy; admission (api_shim/admission.py) counts that wait, so that no queue goes unseen.
- **It admits and refuses without a thread.** While every thread is taken, a predict whose whole request is
  already in the socket is judged by the accept loop itself (api_shim/fast_refusal.py): admitted, its texts are
  counted in flight before it waits for a thread; refused, it is answered `429 overloaded` there, so a refusal
  never queues behind the accepted requests that hold the threads, and a burst of new clients is judged one by
  one as it arrives. A new connection whose request has not arrived yet then waits in the poller, not in the
  thread pool's queue. While a thread is free, the request goes to it as in the stock worker, and admission
  judges it in its route at once: judging it in the accept loop too (a peek and a parse of its body) was a
  sixth of the shim's CPU at 32 clients (bench/levers.md).
- **A kept-alive connection lingers on its thread.** The stock worker hands every kept-alive connection back to
  its poller after each response: a wake-up of the main loop, a poller registration and a thread pool hand-off
  for every request. While another thread is free, the thread waits up to KEEPALIVE_LINGER_MS for the
  connection's next request and serves it itself; 13% less of the shim's CPU per request at 32 clients
  (bench/levers.md). A new connection that finds every other thread taken waits at most that long for one.
"""

from __future__ import annotations

import os
import select
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


def reservation():
    """What the accept loop counted in flight for the predict this thread is handling, if it judged it there
    (api_shim/admission.py's Reservation); None otherwise."""
    return getattr(_this_request, "reservation", None)


def arrived_at() -> float | None:
    """When the request this thread is handling was handed to the thread pool (time.monotonic; None outside
    gunicorn)."""
    return getattr(_this_request, "arrived_at", None)


class ShimWorker(ThreadWorker):
    def init_process(self) -> None:
        # When each connection still waiting for a thread was handed to the pool, oldest first: the pool's
        # queue is FIFO, so the thread that starts next takes the oldest.
        self._waiting: deque[float] = deque()
        self._busy = 0  # threads handling a connection now
        self._waiting_lock = threading.Lock()  # guards both
        self._linger_s = 0.0  # how long a kept-alive connection waits on its thread for its next request
        self._stopping = False
        # Written once the worker stops, never read: every lingering thread's poll wakes at once, so that no linger
        # holds the graceful stop (the pool's threads are joined before the process exits).
        self._stop_read, self._stop_write = os.pipe()
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        settings = getattr(self.wsgi, "extensions", {}).get("shim_settings")
        self._linger_s = settings.keepalive_linger_ms / 1000 if settings is not None else 0.0

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # shutting down, not merely at worker_connections
            self._stop_lingering()
            for listener in self.sockets:
                listener.close()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self._stop_lingering()

    def is_parent_alive(self) -> bool:
        alive = super().is_parent_alive()
        if not alive:  # the main loop ends without a signal
            self._stop_lingering()
        return alive

    def _stop_lingering(self) -> None:
        if not self._stopping:
            self._stopping = True
            os.write(self._stop_write, b"x")  # async-signal-safe: also called from the SIGTERM handler

    def enqueue_req(self, conn) -> None:
        now = time.monotonic()
        if self.alive and self._admitted_or_answered(conn, now):
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
            self._busy += 1
        arrived = getattr(conn, "enqueued_at", now)
        reservation, conn.reservation = getattr(conn, "reservation", None), None
        _this_request.arrived_at = arrived
        _this_request.waited_s = now - arrived
        _this_request.reservation = reservation
        try:
            kept_alive = super().handle(conn)
            while kept_alive is True and self._next_request_here(conn):
                _this_request.arrived_at = time.monotonic()
                _this_request.waited_s = 0.0
                _this_request.reservation = None
                kept_alive = super().handle(conn)
            return kept_alive
        finally:
            with self._waiting_lock:
                self._busy -= 1
            _this_request.reservation = None
            if reservation is not None:  # its route never took it over: a 400, a dropped connection
                self._admission().release(reservation)

    def _next_request_here(self, conn) -> bool:
        """Whether this thread serves the connection's next request itself: it is already read ahead, or it
        arrives within the linger while another thread is free for everyone else."""
        if self._linger_s <= 0 or self._stopping or not self.alive:
            return False
        if conn.parser.unreader.buf.getvalue():
            return True  # pipelined: the next request is in the parser's buffer, which no poller sees
        with self._waiting_lock:
            if self._waiting or self._busy >= self.cfg.threads:
                return False
        poller = select.poll()  # not select.select: a worker's descriptors may pass 1024
        poller.register(conn.sock, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        ready = poller.poll(self._linger_s * 1000)
        return bool(ready) and not self._stopping and self.alive

    # ------------------------------------------------------------------------- the accept loop's admission

    def _admission(self):
        return getattr(self.wsgi, "extensions", {}).get("admission")

    def _admitted_or_answered(self, conn, now: float) -> bool:
        """While every thread is taken, judge a predict that is wholly in the socket here, in the accept loop:
        admitted, it goes to the thread pool with its texts counted in flight (`conn.reservation`); refused, it is
        answered 429 at once. True when the connection was dealt with here (refused, or waiting in the poller for
        its request)."""
        admission = self._admission()
        if admission is None or not admission.enabled:
            return False
        with self._waiting_lock:
            if self._busy + len(self._waiting) < self.cfg.threads:
                return False  # a thread takes it now, and its route judges it
        if conn.initialized and conn.parser.unreader.buf.getvalue():
            return False  # bytes read ahead of the socket: its next request is not what the socket holds
        predict = fast_refusal.peek_predict(conn.sock)
        if predict is fast_refusal.Outcome.NO_DATA:
            if conn.initialized:
                return False
            self._wait_for_request(conn)  # a new connection: its request is on the way, no thread waits for it
            return True
        if not isinstance(predict, fast_refusal.PeekedPredict):
            return False  # not a whole predict: its thread serves it, and admission judges it in the route
        with self._waiting_lock:
            thread_wait = now - self._waiting[0] if self._waiting else 0.0
        verdict, conn.reservation = admission.reserve(predict.texts, thread_wait)
        if verdict.admitted:
            return False
        outcome = fast_refusal.refuse(conn.sock, predict, verdict.refusal(admission.max_wait_s), now)
        if outcome is fast_refusal.Outcome.KEEP_ALIVE and len(self.keepalived_conns) < self.max_keepalived:
            conn.set_timeout()
            self.keepalived_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
        else:
            self.nr_conns -= 1
            conn.close()
        return True

    def _wait_for_request(self, conn) -> None:
        """As gunicorn does with a connection whose request did not come in time: the poller watches it."""
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
