"""Admission (api_shim/admission.py) on a fake clock and a real shared account (api_shim/node_load.py): what runs
at once is never refused, a queue is judged by the waits measured, and every worker sees one account."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from api_shim.admission import ASK_EVERY_S, DRAIN_WINDOW_S, INTERVAL_S, STALE_S, Admission, Ticket
from api_shim.node_load import NodeLoad, Wait
from lora_core.errors import Overloaded

CAPACITY = 128  # two instances of max_batch_size 64
FALLBACK = 64  # one instance's, while Triton has not told
BUDGET = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def admission_with(clock: Clock, budget: float = BUDGET, capacity: int | None = CAPACITY) -> Admission:
    return Admission(NodeLoad.create(), budget, lambda: capacity, FALLBACK, clock)


@pytest.fixture
def admission(clock) -> Admission:
    return admission_with(clock)


@contextmanager
def held(admission: Admission, *works: int) -> Iterator[list[Ticket]]:
    """Predicts of these sizes admitted together and held (never answered)."""
    with ExitStack() as stack:
        yield [stack.enter_context(admission.admit(work)) for work in works]


def answered(admission: Admission, clock: Clock, work: int, triton_wait_s: float, queued: int = 0) -> None:
    """What an answered predict of `work` texts records: it waited `triton_wait_s` in Triton, with `queued` texts
    (its own among them) beyond what runs at once."""
    with admission.load.locked() as shared:
        admission.load.record(shared, Wait(clock(), 0.0, triton_wait_s, float(queued), triton_wait_s))


def test_an_answered_predict_records_its_wait_in_triton_and_how_much_was_queued(admission, clock) -> None:
    with held(admission, *[64] * 3):  # 192 in flight
        with admission.admit(16, thread_wait_s=0.2) as ticket:
            ticket.answered(round_trip_s=0.7, execute_s=0.1)
    (wait,) = admission.load.recent_waits(admission.load.unlocked, clock.now)
    assert (wait.thread_s, wait.triton_s, wait.ahead) == (0.2, pytest.approx(0.6), 192 + 16 - CAPACITY)
    assert wait.judged_s == pytest.approx(0.6)  # judged in its route, after its thread wait
    assert admission.load.recent_drains(admission.load.unlocked, clock.now) == [wait]
    assert admission.measured_wait_s() == pytest.approx(0.8)


def test_with_nothing_in_flight_any_predict_is_admitted_however_long_the_recent_waits(admission, clock) -> None:
    for _ in range(10):
        answered(admission, clock, 64, triton_wait_s=30.0, queued=64)
    with admission.admit(10_000):
        pass


def test_what_fits_in_the_batches_running_is_admitted_whatever_was_measured(admission, clock) -> None:
    for _ in range(10):  # a queue that made every predict wait 5 s, just now
        answered(admission, clock, 16, triton_wait_s=5.0, queued=16)
    with held(admission, *[16] * 7):  # 112 texts in flight
        with admission.admit(16):  # 128: fits
            pass
        with pytest.raises(Overloaded):
            admission.admit(17).__enter__()  # 129: queues behind a measured 5 s


def test_before_any_drain_is_measured_one_batch_per_instance_may_queue(admission, clock) -> None:
    with held(admission, *[16] * 15):  # 240 texts: 112 queued
        with admission.admit(16):  # 256: a batch per instance queued, 1 s
            pass
        with pytest.raises(Overloaded) as refused:
            admission.admit(17).__enter__()
    # 129 texts queued and half the running batches, at the start-up cost of a text: 1/192 s
    assert refused.value.wait_s == pytest.approx((129 + CAPACITY / 2) * BUDGET / (1.5 * CAPACITY))
    assert refused.value.retry_after_s == 1
    assert refused.value.to_dict()["error"] == "overloaded"
    assert "nothing was done" in refused.value.message


def test_lone_predicts_teach_nothing_about_a_queue(admission, clock) -> None:
    """The flaw of the speed model this replaced: lone requests, slow to compute, made it think the service slow.
    They waited for nothing, and that is all they tell."""
    for _ in range(200):
        answered(admission, clock, 1, triton_wait_s=0.0)
        clock.now += 0.02
    with held(admission, *[16] * 15):
        with admission.admit(16):  # the start-up bound still holds: nothing was learned
            pass


def test_a_queued_predict_also_waits_for_what_is_left_of_the_running_batches(admission, clock) -> None:
    for _ in range(4):  # 64 texts queued ahead, and half of the 128 running: 0.64 s, so 5 ms a text
        answered(admission, clock, 16, triton_wait_s=0.64, queued=64)
    with held(admission, *[16] * 8):  # 128: what runs at once
        with admission.admit(130):  # (130 + 64) x 5 ms
            pass
        with pytest.raises(Overloaded) as refused:
            admission.admit(140).__enter__()  # (140 + 64) x 5 ms
    assert refused.value.wait_s == pytest.approx((140 + 64) * 0.005)


def test_the_drain_measured_on_queued_predicts_sets_how_deep_the_queue_may_be(admission, clock) -> None:
    # Predicts with 128 texts queued ahead (and 64 left to run) waited 0.25 s: 1/768 s a text.
    for _ in range(8):
        answered(admission, clock, 16, triton_wait_s=0.25, queued=128)
    with held(admission, *[64] * 8):  # 512 in flight: 384 queued, 0.58 s
        with admission.admit(300):  # 684 queued: 0.97 s
            pass
        with pytest.raises(Overloaded) as refused:
            admission.admit(400).__enter__()  # 784 queued: 1.10 s
    assert refused.value.wait_s == pytest.approx((784 + 64) / 768)


def test_a_slow_drain_refuses_a_shallower_queue_than_the_start_up_bound(admission, clock) -> None:
    for _ in range(8):  # 0.9 s of Triton wait with 32 texts queued (and 64 left to run): 9.4 ms a text
        answered(admission, clock, 16, triton_wait_s=0.9, queued=32)
    with held(admission, *[16] * 9):  # 144: 16 queued
        with pytest.raises(Overloaded) as refused:
            admission.admit(32).__enter__()  # 48 queued: 1.05 s, where the start-up bound said 0.58 s
    assert refused.value.wait_s == pytest.approx((48 + 64) * 0.9 / 96)


def test_the_drain_is_forgotten_after_its_window(admission, clock) -> None:
    for _ in range(8):
        answered(admission, clock, 16, triton_wait_s=1.0, queued=32)
    clock.now += DRAIN_WINDOW_S + 0.1
    with held(admission, *[16] * 15):
        with admission.admit(16):  # back to the start-up bound: 256 texts
            pass


def test_a_standing_queue_measured_over_the_interval_refuses_even_when_the_drain_says_less(admission, clock) -> None:
    for _ in range(8):  # a fast drain: 0.25 s for 128 texts queued
        answered(admission, clock, 16, triton_wait_s=0.25, queued=128)
    clock.now += INTERVAL_S * 2  # those are out of the interval
    for _ in range(3):  # but the last predicts all waited 1.5 s in Triton
        answered(admission, clock, 1, triton_wait_s=1.5)
    with held(admission, *[16] * 8):
        with pytest.raises(Overloaded) as refused:
            admission.admit(1).__enter__()  # 1 text queued: the drain says 2 ms, the queue measured 1.5 s
    assert refused.value.wait_s == pytest.approx(1.5)
    assert admission.measured_wait_s() == pytest.approx(1.5)


def test_one_slow_predict_in_the_interval_is_not_a_standing_queue(admission, clock) -> None:
    answered(admission, clock, 1, triton_wait_s=3.0)
    for _ in range(4):
        answered(admission, clock, 1, triton_wait_s=0.1)
    with held(admission, *[16] * 8):
        with admission.admit(1):  # the least wait over the interval: 0.1 s
            pass


def test_a_stale_measured_wait_says_nothing_of_now(admission, clock) -> None:
    answered(admission, clock, 1, triton_wait_s=3.0)
    clock.now += STALE_S / 2
    assert admission.measured_wait_s() == pytest.approx(3.0)  # the latest, though out of the interval
    clock.now += STALE_S
    assert admission.measured_wait_s() == 0.0
    clock.now += DRAIN_WINDOW_S  # and what the running batches cost is forgotten too
    with held(admission, *[16] * 8):
        with admission.admit(1):
            pass


def test_the_wait_for_a_thread_counts(admission, clock) -> None:
    with held(admission, *[16] * 8):  # 128: anything more queues; at the start-up cost, 1/192 s a text
        with admission.admit(32, thread_wait_s=0.3):  # (32 + 64) / 192 = 0.5 s, + 0.3 s
            pass
        with pytest.raises(Overloaded) as refused:
            admission.admit(32, thread_wait_s=0.6).__enter__()
    assert refused.value.wait_s == pytest.approx(0.5 + 0.6)


def in_flight(admission: Admission) -> int:
    return admission.load.texts_in_flight(admission.load.unlocked)


def test_the_accept_loop_counts_what_it_admits_and_the_route_takes_it_over(admission, clock) -> None:
    admission.capacity()  # known, as after the first predict
    verdict, reservation = admission.reserve(16, 0.0)
    assert verdict.admitted and reservation is not None
    assert in_flight(admission) == 16  # counted before any thread takes it
    with admission.admit(16, 0.0, reservation):
        assert in_flight(admission) == 16  # not judged, nor counted, twice
    assert in_flight(admission) == 0
    admission.release(reservation)  # the worker, after the request: nothing left to give back
    assert in_flight(admission) == 0


def test_a_predict_judged_in_the_accept_loop_teaches_the_drain_its_wait_for_a_thread_too(admission, clock) -> None:
    """The texts ahead of it went on to Triton while it waited for its thread: the queue drained for both waits."""
    admission.capacity()
    with held(admission, *[64] * 3):  # 192
        _, reservation = admission.reserve(16, 0.0)
        with admission.admit(16, 0.3, reservation) as ticket:
            ticket.answered(round_trip_s=0.5, execute_s=0.1)
    (wait,) = admission.load.recent_drains(admission.load.unlocked, clock.now)
    assert (wait.thread_s, wait.triton_s, wait.judged_s) == (0.3, pytest.approx(0.4), pytest.approx(0.7))


def test_what_the_accept_loop_counted_for_a_request_its_route_never_took_is_given_back(admission, clock) -> None:
    admission.capacity()
    _, reservation = admission.reserve(16, 0.0)
    assert reservation is not None and in_flight(admission) == 16
    admission.release(reservation)  # a 400, say: the route never admitted it
    assert in_flight(admission) == 0


def test_the_accept_loop_refuses_without_counting(admission, clock) -> None:
    with held(admission, *[16] * 16):  # 256: anything more queues past the start-up bound
        verdict, reservation = admission.reserve(1, 0.0)
        assert not verdict.admitted and reservation is None
        assert verdict.refusal(BUDGET).wait_s > BUDGET
        assert in_flight(admission) == 256


def test_while_triton_has_not_told_its_capacity_one_instance_stands_for_it(clock) -> None:
    admission = admission_with(clock, capacity=None)
    with held(admission, 64, 64):  # 64 queued behind one instance's 64: (64 + 32) / 96 s
        verdict, reservation = admission.reserve(1, 0.0)
        assert not verdict.admitted and reservation is None


def test_a_failed_predict_leaves_and_teaches_nothing(admission, clock) -> None:
    with pytest.raises(RuntimeError):
        with admission.admit(16):
            raise RuntimeError("Triton went away")
    assert admission.load.texts_in_flight(admission.load.unlocked) == 0
    assert admission.measured_wait_s() == 0.0


def test_admission_off_admits_everything(clock) -> None:
    admission = admission_with(clock, budget=0)
    assert not admission.enabled
    for _ in range(8):
        answered(admission, clock, 16, triton_wait_s=30.0, queued=400)
    with held(admission, *[1024] * 8):
        with admission.admit(1024):
            pass


def test_triton_is_asked_its_capacity_again_at_most_every_second_and_once_told_never_again(clock) -> None:
    answers: list[int | None] = [None, 128]
    admission = Admission(NodeLoad.create(), BUDGET, lambda: answers.pop(0), FALLBACK, clock)
    assert admission.capacity() == FALLBACK  # asked: None
    assert admission.capacity() == FALLBACK  # not asked again within the second
    assert answers == [128]
    clock.now += ASK_EVERY_S
    assert admission.capacity() == 128  # asked: told
    assert admission.capacity() == 128 and answers == []  # kept for the node


def test_every_worker_process_sees_one_account_and_a_dead_one_stops_counting(clock) -> None:
    load = NodeLoad.create()  # as gunicorn's master makes it, before forking
    parent = Admission(load, BUDGET, lambda: CAPACITY, FALLBACK, clock)
    admitted_read, admitted_write = os.pipe()  # the worker -> the test
    end_read, end_write = os.pipe()  # the test -> the worker
    child = os.fork()
    if child == 0:  # a worker: admits 200 texts, says so, and dies holding them
        try:
            worker = Admission(load, BUDGET, lambda: CAPACITY, FALLBACK, clock)
            holding = worker.admit(200)  # kept: a generator collected would leave
            holding.__enter__()
            os.write(admitted_write, b"x")
            os.read(end_read, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(admitted_read, 1) == b"x"
        with parent.admit(16):  # 216 in flight on the node
            assert load.texts_in_flight(load.unlocked) == 216
            with pytest.raises(Overloaded):
                parent.admit(48).__enter__()  # 264: more than a batch per instance queued
    finally:
        os.write(end_write, b"x")
        os.waitpid(child, 0)
    assert load.texts_in_flight(load.unlocked) == 200
    load.release(child)  # gunicorn's master, on the worker's exit
    assert load.texts_in_flight(load.unlocked) == 0


def test_each_worker_learns_the_capacity_as_it_starts_until_triton_tells() -> None:
    answers: list[int | None] = [None, None, 128]
    admission = Admission(NodeLoad.create(), BUDGET, lambda: answers.pop(0), FALLBACK)  # the real clock
    admission.learn_capacity().join(timeout=3 * ASK_EVERY_S + 5)
    assert admission.load.unlocked.capacity == 128 and answers == []
