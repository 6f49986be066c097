"""Admission: a predict is refused at once (429 overloaded, Retry-After) only when it would wait longer than
ADMISSION_MAX_WAIT_S before its batch starts; otherwise it goes to Triton.

A request's wait is its wait for a gunicorn thread plus its wait in Triton, from being sent to its batch's
start. Both are measured for every predict answered: the thread wait by the worker (api_shim/worker.py), the
Triton wait as the round trip less the time its batch spent executing, which the model returns
(EXECUTE_US). Clock-free, so it holds behind a balancer too. Every gunicorn worker records into, and decides
from, one shared account of the node (api_shim/node_load.py): the texts admitted and not yet answered, and
the recent waits.

The decision, for a predict of `work` texts arriving with `in_flight` texts already admitted:

- **What runs at once never waits for a queue.** Triton runs `capacity` texts at once (its instances x
  max_batch_size, from the model's configuration). While `in_flight + work` fits, the predict is admitted:
  at worst it waits for the batch ahead of it, which refusing others cannot shorten. So a crowd whose work
  fits in one batch per instance is never refused, whatever happened before.
- **Beyond that, the queue ahead is measured, not modelled.** `queued = in_flight + work - capacity` texts
  must drain before it starts, after what is left of the batches running (half of them, on average). Each
  predict answered with texts queued ahead of it tells what a text cost it in Triton wait, at the load it met
  (the drain); the estimate is `(queued + capacity / 2)` texts at the cost of the last DRAIN_WINDOW_S. The
  drain is learned only where it is applied (with a queue), so a quiet start does not teach a slow speed: that
  was the flaw of the speed model this replaces, which applied a per-text speed learned from lone requests to
  batched traffic. (Measured on this CPU under a flood: predicts with nothing queued ahead still waited up to
  1.1 s for the running batches, which a drain of queued texts alone would leave out.)
- **The standing queue, as CoDel measures it.** The least Triton wait of the predicts answered over the last
  INTERVAL_S (RFC 8289's interval; the latest one when none was answered in it, for STALE_S) is a wait that
  every recent request had: while a queue is there, that measured wait counts even when the estimate is lower.
- **Start-up.** Until MIN_DRAINS queued predicts have been answered, a text is taken to cost
  ADMISSION_MAX_WAIT_S / (1.5 capacity): up to one batch per instance may queue behind the running ones. A
  service flooded in its first second then holds at most two batches per instance, so no window admits
  everything, and a request admitted waits about one batch at most. (Each instance runs a full batch at
  initialize, so the first batch a client meets is not a cold one.) The capacity is asked of Triton by each
  worker as it starts, until Triton tells; one instance's max_batch_size stands for it meanwhile.

The request's own thread wait is added: measured exactly in the route; in the worker's accept loop, where a
refusal is answered without taking a thread (api_shim/worker.py), the oldest connection still waiting for a
thread stands for it.

How fresh each signal is: in-flight texts and thread waits are current. A Triton wait is known when its
predict is answered, one batch after its batch started (milliseconds on a GPU, up to a second on a CPU). The
drain averages the last DRAIN_WINDOW_S. Triton's own queue metrics are cumulative counters and its HTTP
answers carry no timing, so neither is used. Nothing in flight admits anything: a request larger than the
limit alone is served, never refused forever.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lora_core.errors import Overloaded

from .node_load import NodeLoad, Wait

INTERVAL_S = 0.1  # CoDel's interval: the least wait over it is the standing queue
STALE_S = 1.0  # a last measured wait older than this says nothing of the queue now
DRAIN_WINDOW_S = 5.0  # the drain: predicts answered over these last seconds with texts queued ahead of them
ASK_EVERY_S = 1.0  # while Triton has not told how many texts it runs at once, a worker asks again this often
MIN_DRAINS = 4  # the drain replaces the start-up cost once this many queued predicts have been answered


@dataclass(frozen=True)
class Verdict:
    """What admission found for one predict."""

    admitted: bool
    in_flight: int  # texts admitted before it, node-wide
    queued: int  # texts that cannot start at once if it is admitted (0: it fits in the batches running)
    estimate_s: float  # its expected wait before its batch starts, its thread wait included
    measured_s: float  # the standing queue's measured Triton wait (0 when no queue)

    def refusal(self, max_wait_s: float) -> Overloaded:
        return Overloaded(
            f"the service is overloaded: a predict would wait about {self.estimate_s:.2f} s before it starts "
            f"({self.queued} texts queued ahead; the requests answered last waited {self.measured_s:.2f} s), more "
            f"than the {max_wait_s:g} s it accepts; nothing was done, send it again after Retry-After seconds",
            retry_after_s=max(1, math.ceil(self.estimate_s - max_wait_s)),
            wait_s=self.estimate_s,
        )


class Reservation:
    """Texts counted in flight by the accept loop for a predict it let through to the thread pool. Its route takes
    it over (`admit`); a request that never gets there (a 400, a dropped connection) gives it back (`release`)."""

    def __init__(self, work: int, queued: int) -> None:
        self.work = work
        self.queued = queued
        self.settled = False


class Ticket:
    """An admitted predict: the route tells it how long its Triton calls took and how long their batches ran."""

    def __init__(self, ahead: int, judged_before_thread: bool) -> None:
        self.ahead = ahead
        self.judged_before_thread = judged_before_thread  # by the accept loop: its thread wait came after
        self.triton_wait_s: float | None = None

    def answered(self, round_trip_s: float, execute_s: float) -> None:
        self.triton_wait_s = max(0.0, round_trip_s - execute_s)


class Admission:
    def __init__(
        self,
        load: NodeLoad,
        max_wait_s: float,
        capacity: Callable[[], int | None],
        fallback_capacity: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`capacity` asks Triton how many texts it runs at once (None while it cannot tell): once known, kept in
        the shared account for the node. Until then, `fallback_capacity` (one instance's max_batch_size) stands
        for it, and one thread of a worker asks again, at most every ASK_EVERY_S: a flood's first requests must
        neither be admitted unjudged nor all ask Triton at once."""
        self.load = load
        self.max_wait_s = max_wait_s
        self._ask_capacity = capacity
        self._fallback_capacity = fallback_capacity
        self._asking = threading.Lock()
        self._asked_at = -math.inf
        self._clock = clock
        load.claim()

    @property
    def enabled(self) -> bool:
        return self.max_wait_s > 0

    @contextmanager
    def admit(self, work: int, thread_wait_s: float = 0.0, reservation: Reservation | None = None) -> Iterator[Ticket]:
        """Admit a predict of `work` texts that waited `thread_wait_s` for its thread, for the duration of the
        block, or raise Overloaded. A predict the accept loop let through (`reservation`) is admitted already: it
        is not judged twice. Only a predict answered records its wait."""
        if reservation is not None and not reservation.settled:
            reservation.settled = True
            queued = reservation.queued
            with self.load.locked() as shared:
                self.load.add_texts(shared, work - reservation.work)  # the same count, unless its body was odd
        else:
            capacity = self.capacity()
            with self.load.locked() as shared:
                verdict = self._verdict(shared, capacity, work, thread_wait_s)
                if not verdict.admitted:
                    raise verdict.refusal(self.max_wait_s)
                self.load.add_texts(shared, work)
            queued = verdict.queued
        ticket = Ticket(queued, reservation is not None)
        try:
            yield ticket
        finally:
            with self.load.locked() as shared:
                self.load.add_texts(shared, -work)
                if ticket.triton_wait_s is not None:
                    # The queue it was judged against drained for as long as it waited since then: a predict
                    # judged in the accept loop also waited for its thread while the texts ahead went to Triton.
                    judged = ticket.triton_wait_s + (thread_wait_s if ticket.judged_before_thread else 0.0)
                    wait = Wait(self._clock(), thread_wait_s, ticket.triton_wait_s, float(ticket.ahead), judged)
                    self.load.record(shared, wait)

    def reserve(self, work: int, thread_wait_s: float) -> tuple[Verdict, Reservation | None]:
        """The accept loop's admission of a whole predict of `work` texts, before any thread takes it: the verdict,
        and the texts counted in flight when admitted (None when refused)."""
        shared = self.load.unlocked
        capacity = shared.capacity or self._fallback_capacity  # no question to Triton from the accept loop
        # Judged first without the lock: taking it is two system calls, each of which gives up the GIL to the
        # worker's busy threads, and a refusal must not wait on them. A sample caught half-written moves one
        # estimate a little; what is admitted is judged again under the lock.
        verdict = self._verdict(shared, capacity, work, thread_wait_s)
        if not verdict.admitted:
            return verdict, None
        with self.load.locked() as shared:
            verdict = self._verdict(shared, capacity, work, thread_wait_s)
            if not verdict.admitted:
                return verdict, None
            self.load.add_texts(shared, work)
        return verdict, Reservation(work, verdict.queued)

    def release(self, reservation: Reservation) -> None:
        """Give back what the accept loop counted for a predict whose route never took it over."""
        if not reservation.settled:
            reservation.settled = True
            with self.load.locked() as shared:
                self.load.add_texts(shared, -reservation.work)

    def measured_wait_s(self) -> float:
        """The node's measured wait now: the least wait (thread and Triton) of the predicts answered over the
        last INTERVAL_S, or the latest one for STALE_S; 0 when none. What `lora_api_admission_wait_seconds`
        reports."""
        now = self._clock()
        with self.load.locked() as shared:
            waits = self.load.recent_waits(shared, now - INTERVAL_S) or self._latest(shared, now)
        return min((w.total_s for w in waits), default=0.0)

    def learn_capacity(self) -> threading.Thread:
        """Ask Triton its capacity from a thread of this worker, every ASK_EVERY_S until it tells, so that it is
        known before traffic comes: the accept loop judges with it, and never asks Triton itself."""

        def ask_until_told() -> None:
            while self.capacity() == self._fallback_capacity and not self.load.unlocked.capacity:
                time.sleep(ASK_EVERY_S)

        thread = threading.Thread(target=ask_until_told, name="admission-capacity", daemon=True)
        thread.start()
        return thread

    def capacity(self) -> int:
        """Texts that Triton runs at once: known for the node, or asked (one thread at a time, at most every
        ASK_EVERY_S), or the fallback meanwhile."""
        known = self.load.unlocked.capacity
        if known:
            return known
        if self._asking.acquire(blocking=False):
            try:
                now = self._clock()
                if now - self._asked_at >= ASK_EVERY_S:
                    self._asked_at = now
                    asked = self._ask_capacity()
                    if asked:
                        with self.load.locked() as shared:
                            shared.capacity = asked
                        return asked
            finally:
                self._asking.release()
        return self._fallback_capacity

    # ------------------------------------------------------------------------------------ internals

    def _verdict(self, shared, capacity: int, work: int, thread_wait_s: float) -> Verdict:
        in_flight = self.load.texts_in_flight(shared)
        if not self.enabled or in_flight == 0:
            return Verdict(True, in_flight, 0, thread_wait_s, 0.0)
        queued = max(0, in_flight + work - capacity)
        measured = triton_wait = 0.0
        if queued:
            now = self._clock()
            measured = self._standing_triton_wait(shared, now)
            triton_wait = max(self._queue_wait(shared, capacity, queued, now), measured)
        estimate = thread_wait_s + triton_wait
        return Verdict(estimate <= self.max_wait_s, in_flight, queued, estimate, measured)

    def _queue_wait(self, shared, capacity: int, queued: int, now: float) -> float:
        """The Triton wait of a predict with `queued` texts ahead beyond what runs at once. It waits for those,
        and for what is left of the batches running: half of them on average, as a predict arrives anywhere in a
        batch's run. So the wait is `(queued + capacity / 2)` texts' worth, at what a text cost the predicts of
        the last DRAIN_WINDOW_S that had a queue ahead of them (the drain)."""
        drains = self.load.recent_drains(shared, now - DRAIN_WINDOW_S)
        running = capacity / 2
        if len(drains) >= MIN_DRAINS:
            per_text = sum(w.judged_s for w in drains) / sum(w.ahead + running for w in drains)
        else:  # start-up (or too few to go by): one batch per instance may queue behind the running ones
            per_text = self.max_wait_s / (capacity + running)
        return (queued + running) * per_text

    def _standing_triton_wait(self, shared, now: float) -> float:
        waits = self.load.recent_waits(shared, now - INTERVAL_S) or self._latest(shared, now)
        return min((w.triton_s for w in waits), default=0.0)

    def _latest(self, shared, now: float) -> list[Wait]:
        latest = self.load.latest_wait(shared)
        return [latest] if latest is not None and latest.at >= now - STALE_S else []
