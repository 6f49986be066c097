"""The coalescer joins concurrent predicts into shared calls: a lone one goes at once, the others wait for a slot
and go together, each answered alone, within the row bound, and never more calls in flight than allowed."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from api_shim.coalescer import Coalescer, Group
from testkit.conditions import wait_for


class Backend:
    """A `send` that records each call (its groups, its thread) and, while `hold` is clear, blocks in it."""

    def __init__(self, fail_when: str | None = None) -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold = threading.Event()
        self.hold.set()
        self.fail_when = fail_when
        self._lock = threading.Lock()

    def send(self, groups: list[Group]) -> list[str]:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.calls.append(([g.texts[0] for g in groups], threading.current_thread().name))
        try:
            self.hold.wait()
            if self.fail_when is not None and any(g.texts[0] == self.fail_when for g in groups):
                raise RuntimeError("the call failed")
            return [f"answer to {g.texts[0]} ({len(g.texts)} rows)" for g in groups]
        finally:
            with self._lock:
                self.in_flight -= 1


def group(name: str, rows: int = 1) -> Group:
    return Group([name] * rows, ["m"] * rows)


def run_named(coalescer: Coalescer, name: str, rows: int = 1) -> str:
    threading.current_thread().name = name
    return coalescer.run(group(name, rows))


def test_a_lone_predict_goes_at_once_and_alone():
    backend = Backend()
    coalescer = Coalescer(backend.send, max_in_flight=2, max_rows=64)
    assert coalescer.run(group("a")) == "answer to a (1 rows)"
    assert coalescer.run(group("b", 3)) == "answer to b (3 rows)"
    assert [names for names, _ in backend.calls] == [["a"], ["b"]]


@pytest.mark.parametrize("max_in_flight, waiting", [(1, 7), (2, 12), (3, 30)])
def test_predicts_that_wait_for_a_slot_go_together_each_answered_alone(max_in_flight, waiting):
    backend = Backend()
    backend.hold.clear()
    coalescer = Coalescer(backend.send, max_in_flight=max_in_flight, max_rows=64)
    with ThreadPoolExecutor(max_in_flight + waiting) as pool:
        first = [pool.submit(run_named, coalescer, f"first-{i}") for i in range(max_in_flight)]
        wait_for(lambda: backend.in_flight == max_in_flight, 10, "every slot taken")
        later = [pool.submit(run_named, coalescer, f"later-{i}") for i in range(waiting)]
        wait_for(lambda: len(coalescer._waiting) == waiting, 10, "the others waiting")
        backend.hold.set()
        answers = [f.result(10) for f in first + later]
    names = [f"first-{i}" for i in range(max_in_flight)] + [f"later-{i}" for i in range(waiting)]
    assert answers == [f"answer to {name} (1 rows)" for name in names]
    later_calls = backend.calls[max_in_flight:]
    assert sorted(n for names, _ in later_calls for n in names) == sorted(names[max_in_flight:])
    assert len(later_calls) <= max_in_flight  # the waiting ones shared the slots as they came back
    assert backend.most_in_flight <= max_in_flight


def test_every_call_carries_the_predict_of_the_thread_that_sends_it():
    backend = Backend()
    coalescer = Coalescer(backend.send, max_in_flight=2, max_rows=5)
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda i: run_named(coalescer, f"p{i}", 1 + i % 3), range(200)))
    assert results == [f"answer to p{i} ({1 + i % 3} rows)" for i in range(200)]
    for names, thread in backend.calls:
        assert thread in names
    assert sorted(n for names, _ in backend.calls for n in names) == sorted(f"p{i}" for i in range(200))
    assert backend.most_in_flight <= 2
    assert coalescer._in_flight == 0 and not coalescer._waiting  # every slot given back


@pytest.mark.parametrize("attempt", range(20))  # the race is likely, not certain, in any one attempt
def test_a_slot_is_handed_to_one_waiting_predict_once(attempt):
    """Both calls come back while the predict the first hands its slot to has not yet taken its batch: the second
    must hand its slot to another predict, or free it. Handed the same predict twice, one slot was lost for good,
    and the worker kept one call in flight instead of two from then on."""
    backend = Backend()
    backend.hold.clear()
    coalescer = Coalescer(backend.send, max_in_flight=2, max_rows=1)  # one predict per call: none is taken along
    with ThreadPoolExecutor(5) as pool:
        first = [pool.submit(run_named, coalescer, f"first-{i}") for i in range(2)]
        wait_for(lambda: backend.in_flight == 2, 10, "both slots taken")
        later = [pool.submit(run_named, coalescer, f"later-{i}") for i in range(3)]
        wait_for(lambda: len(coalescer._waiting) == 3, 10, "three predicts waiting")
        with coalescer._lock:  # both calls come back and queue for the lock, ahead of any predict they wake
            backend.hold.set()
            wait_for(lambda: backend.in_flight == 0, 10, "both calls back")
        answers = [f.result(10) for f in first + later]
    assert answers == [f"answer to {n} (1 rows)" for n in ("first-0", "first-1", "later-0", "later-1", "later-2")]
    assert coalescer._in_flight == 0 and not coalescer._waiting, "a slot was lost"
    assert backend.most_in_flight <= 2


def test_a_call_never_holds_more_rows_than_the_bound_unless_one_predict_alone_does():
    backend = Backend()
    backend.hold.clear()
    rows = {"first": 1, "big": 9, "a": 3, "b": 3, "c": 3}
    coalescer = Coalescer(backend.send, max_in_flight=1, max_rows=6)
    with ThreadPoolExecutor(5) as pool:
        futures = {"first": pool.submit(run_named, coalescer, "first", 1)}
        wait_for(lambda: backend.in_flight == 1, 10, "the slot taken")
        for name in ("big", "a", "b", "c"):
            futures[name] = pool.submit(run_named, coalescer, name, rows[name])
            wait_for(lambda n=name: any(w.group.texts[0] == n for w in coalescer._waiting), 10, f"{name} waiting")
        backend.hold.set()
        answers = {n: f.result(10) for n, f in futures.items()}
    assert answers == {n: f"answer to {n} ({r} rows)" for n, r in rows.items()}
    for names, _ in backend.calls:
        assert sum(rows[n] for n in names) <= 6 or len(names) == 1
    assert ["big"] in [names for names, _ in backend.calls]


def test_a_failed_call_fails_its_predicts_and_no_other():
    backend = Backend(fail_when="bad")
    backend.hold.clear()
    coalescer = Coalescer(backend.send, max_in_flight=1, max_rows=64)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(run_named, coalescer, "good-0")
        wait_for(lambda: backend.in_flight == 1, 10, "the slot taken")
        joined = [pool.submit(run_named, coalescer, name) for name in ("bad", "good-1")]
        wait_for(lambda: len(coalescer._waiting) == 2, 10, "both waiting")
        backend.hold.set()
        assert first.result(10) == "answer to good-0 (1 rows)"
        errors = []
        for future in joined:  # they shared the failed call
            with pytest.raises(RuntimeError, match="the call failed") as raised:
                future.result(10)
            errors.append(raised.value)
    assert errors[0] is not errors[1]  # each thread raised an object of its own
    assert coalescer.run(group("good-2")) == "answer to good-2 (1 rows)"  # the slot was given back


class Refusal(Exception):
    """An exception whose constructor takes other arguments than its args: copy.copy cannot rebuild it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")


def test_an_exception_that_cannot_be_copied_is_raised_as_it_is():
    from api_shim.coalescer import _own_copy

    original = Refusal(503, "no node")
    assert _own_copy(original) is original
    cause = ValueError("why")
    chained = RuntimeError("the call failed")
    chained.__cause__ = cause
    twin = _own_copy(chained)
    assert twin is not chained and type(twin) is RuntimeError and twin.args == chained.args
    assert twin.__cause__ is cause and twin.__traceback__ is None
