"""Admission (api_shim/admission.py) on a fake clock: refusal by expected wait, never with nothing in flight."""

from __future__ import annotations

import math
from contextlib import ExitStack

import pytest

from api_shim.admission import WINDOW_S, WINDOWS, Admission
from lora_core.errors import Overloaded


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def serve(admission: Admission, clock: Clock, texts: int, seconds: float, together: int = 1) -> None:
    """`together` requests of `texts` each, served at once in `seconds`."""
    with ExitStack() as held:
        for _ in range(together):
            held.enter_context(admission.admit(texts))
        clock.now += seconds


def test_with_nothing_in_flight_any_request_is_admitted_however_slow_the_service() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    serve(admission, clock, texts=1, seconds=10.0)  # 10 s per text
    with admission.admit(1000):
        pass


def test_before_its_first_window_of_busy_time_a_worker_admits_everything() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    with ExitStack() as held:
        for _ in range(100):
            held.enter_context(admission.admit(64))
        clock.now += WINDOW_S / 2
    with admission.admit(64):
        with admission.admit(64):  # half a window: still no estimate
            assert admission.expected_wait_s() is None


def test_a_request_is_refused_once_the_work_in_flight_would_keep_it_past_the_limit() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    serve(admission, clock, texts=10, seconds=1.0)  # 0.1 s per text
    with ExitStack() as held:
        held.enter_context(admission.admit(9))
        assert admission.expected_wait_s() == pytest.approx(0.9)
        held.enter_context(admission.admit(2))  # waits 0.9 s: admitted
        assert admission.expected_wait_s() == pytest.approx(1.1)
        with pytest.raises(Overloaded) as refused:
            held.enter_context(admission.admit(1))
    assert refused.value.http_status == 429
    assert refused.value.retry_after_s == 2  # the expected wait, rounded up to whole seconds
    assert admission.expected_wait_s() == 0.0  # every request left


def test_the_wait_for_a_thread_counts_against_the_limit() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    serve(admission, clock, texts=10, seconds=1.0)
    with admission.admit(5):  # 0.5 s ahead of the next
        with admission.admit(1, waited_s=0.4):
            pass
        with pytest.raises(Overloaded):
            with admission.admit(1, waited_s=0.6):
                pass


def test_an_outage_does_not_count_as_slowness_once_the_service_is_back() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    serve(admission, clock, texts=10, seconds=1.0)
    with pytest.raises(RuntimeError):
        with admission.admit(50):
            clock.now += 30.0  # Triton hung, then failed
            raise RuntimeError("Triton failed")
    serve(admission, clock, texts=10, seconds=1.0)  # back at 0.1 s per text
    with admission.admit(5):
        assert admission.expected_wait_s() == pytest.approx(0.5)


def test_the_estimate_covers_the_last_windows_weighted_by_their_busy_time() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    serve(admission, clock, texts=16, seconds=1.0, together=4)  # 64 texts in a second
    serve(admission, clock, texts=16, seconds=1.0)  # then 16 in the next
    with admission.admit(40):
        assert admission.expected_wait_s() == pytest.approx(40 * 2.0 / 80)


def test_the_estimate_follows_a_service_that_slows_down_within_a_few_windows() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    serve(admission, clock, texts=100, seconds=1.0)  # 0.01 s per text
    for _ in range(WINDOWS):
        serve(admission, clock, texts=10, seconds=1.0)  # then 0.1 s per text, for every window kept
    with admission.admit(5):
        assert admission.expected_wait_s() == pytest.approx(0.5)


def test_completions_inside_one_window_add_up() -> None:
    clock = Clock()
    admission = Admission(1.0, clock)
    for _ in range(4):
        serve(admission, clock, texts=16, seconds=WINDOW_S / 4)
    with admission.admit(64):
        assert admission.expected_wait_s() == pytest.approx(WINDOW_S)


def test_with_the_limit_off_nothing_is_refused() -> None:
    clock = Clock()
    admission = Admission(math.inf, clock)
    serve(admission, clock, texts=1, seconds=10.0)
    with ExitStack() as held:
        for _ in range(100):
            held.enter_context(admission.admit(64))
