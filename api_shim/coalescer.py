"""Coalescer: the concurrent predicts of one shim worker joined into one Triton request (group commit).

Each Triton request costs an HTTP call, a trip through tritonserver, an IPC to the backend stub and a response,
whatever its rows; on a GPU node the stub's share of that is what the GPU waits on. So a worker keeps at most
`max_in_flight` requests at Triton: a predict that arrives while they are all out waits, and when one comes back,
everything that waited goes out as the next one, each predict a group of rows that succeeds or fails alone
(the model's GROUP input). A predict that finds a free slot goes at once, so a lone request waits for nothing.

The thread whose call comes back hands the next call to the first waiting predict's own thread, so that no
thread sends a call that does not carry its own predict, and no client waits on another's answer being
written.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Answer = TypeVar("Answer")


@dataclass
class Group:
    """One predict's rows; `texts` and `model_ids` have one entry per text."""

    texts: Sequence[str]
    model_ids: Sequence[str]


def _closed_gate() -> threading.Lock:
    gate = threading.Lock()
    gate.acquire()
    return gate


@dataclass(eq=False)
class _Waiting(Generic[Answer]):
    group: Group
    # Opened (released) exactly once: when the predict's answer is in, or when it is handed a slot to lead. A bare
    # lock, not an Event: an Event's Condition costs a few Python calls on each side, per predict.
    wake: threading.Lock = field(default_factory=_closed_gate)
    lead: bool = False  # handed a slot: it sends the next call
    answer: Answer | None = None
    error: BaseException | None = None


class Coalescer(Generic[Answer]):
    """`send(groups)` makes one call for `groups` and returns one answer per group (an answer may stand for the
    group's own error); it raises only for what fails the whole call, which then fails each of its groups."""

    def __init__(self, send: Callable[[list[Group]], list[Answer]], max_in_flight: int, max_rows: int) -> None:
        self._send = send
        self.max_in_flight = max(1, max_in_flight)
        self.max_rows = max(1, max_rows)
        self._lock = threading.Lock()
        self._waiting: deque[_Waiting[Answer]] = deque()
        self._in_flight = 0

    def run(self, group: Group) -> Answer:
        """`group`'s answer, from a call it shares with the groups that waited beside it."""
        mine: _Waiting[Answer] = _Waiting(group)
        with self._lock:
            # A free slot means that nothing waits: a call that comes back hands its slot to a waiting predict.
            if self._in_flight < self.max_in_flight:
                self._in_flight += 1
                mine.lead = True
            else:
                self._waiting.append(mine)
        if not mine.lead:
            mine.wake.acquire()
            if not mine.lead:  # answered by a call another predict sent
                return self._result(mine)
        self._lead(mine)
        return self._result(mine)

    def _lead(self, mine: _Waiting[Answer]) -> None:
        """Send the call that carries `mine` (and whatever waits beside it, up to max_rows), answer each group,
        then hand the slot to the first predict still waiting, or free it."""
        with self._lock:
            batch = self._take(mine)
        try:
            answers = self._send([waiting.group for waiting in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers for {len(batch)} groups")
            for waiting, answer in zip(batch, answers):
                waiting.answer = answer
        except BaseException as exc:  # the whole call failed: so did every group in it
            for waiting in batch:
                waiting.error = exc
        finally:
            with self._lock:
                # Taken out of the queue at once: another call coming back before it leads must not hand it a
                # second slot (one slot would be lost for good).
                successor = self._waiting.popleft() if self._waiting else None
                if successor is None:
                    self._in_flight -= 1
                else:
                    successor.lead = True
            for waiting in batch:
                if waiting is not mine:
                    waiting.wake.release()
            if successor is not None:
                successor.wake.release()

    def _take(self, mine: _Waiting[Answer]) -> list[_Waiting[Answer]]:
        """`mine` (no longer queued) and the predicts waiting after it, in arrival order, up to max_rows rows
        (always `mine`, whatever its size). Under the lock."""
        batch = [mine]
        rows = len(mine.group.texts)
        kept: deque[_Waiting[Answer]] = deque()
        while self._waiting:
            waiting = self._waiting.popleft()
            size = len(waiting.group.texts)
            if rows + size <= self.max_rows:
                batch.append(waiting)
                rows += size
            else:
                kept.append(waiting)
        self._waiting = kept
        return batch

    @staticmethod
    def _result(mine: _Waiting[Answer]) -> Answer:
        if mine.error is not None:
            # The thread that sent the call raises its exception; every other predict in it a copy, so that no two
            # threads raise one object (each raise writes the object's traceback).
            raise mine.error if mine.lead else _own_copy(mine.error)
        assert mine.answer is not None
        return mine.answer


def _own_copy(error: BaseException) -> BaseException:
    """`error` again as a new object of its type, without its traceback; `error` itself where its type cannot be
    copied."""
    try:
        twin = copy.copy(error)
    except Exception:
        return error
    twin.__cause__, twin.__context__ = error.__cause__, error.__context__
    return twin.with_traceback(None)
