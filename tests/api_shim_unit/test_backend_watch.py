"""BackendWatch: calls fail fast while Triton is known dead or suspected hung, and resume when it answers."""

from __future__ import annotations

import pytest

from lora_core.errors import BackendUnavailable
from api_shim.backend_watch import BackendWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Probe:
    def __init__(self, answers: bool = True) -> None:
        self.answers, self.calls = answers, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answers


def make(answers: bool = True, stall_s: float = 5.0):
    clock, probe = Clock(), Probe(answers)
    return BackendWatch("http://x/v2/health/live", stall_s, probe=probe, clock=clock), clock, probe


def test_a_healthy_backend_is_never_probed():
    watch, clock, probe = make()
    for _ in range(100):
        with watch.call():
            clock.now += 0.01
    assert probe.calls == 0


def test_after_a_failure_calls_fail_fast_until_the_backend_answers_again():
    watch, clock, probe = make(answers=False)
    watch.failed()
    with pytest.raises(BackendUnavailable, match="health endpoint"):
        with watch.call():
            pass
    with pytest.raises(BackendUnavailable):  # within the probe interval: the last answer, no new probe
        with watch.call():
            pass
    assert probe.calls == 1
    clock.now += 1.0
    probe.answers = True
    with watch.call():
        pass
    assert probe.calls == 2
    with watch.call():  # healthy again: no probe
        pass
    assert probe.calls == 2


def test_a_call_stuck_longer_than_the_stall_time_makes_new_calls_check_first():
    watch, clock, probe = make(answers=False, stall_s=5.0)
    stuck = watch.call()
    stuck.__enter__()
    clock.now += 4.0
    with watch.call():  # not yet suspect
        pass
    assert probe.calls == 0
    clock.now += 2.0
    with pytest.raises(BackendUnavailable):
        with watch.call():
            pass
    assert probe.calls == 1
    stuck.__exit__(None, None, None)
    clock.now += 1.0
    with watch.call():  # nothing stuck, no failure seen: not suspect
        pass
    assert probe.calls == 1


def test_a_slow_but_answering_backend_keeps_serving():
    watch, clock, probe = make(answers=True, stall_s=1.0)
    long_call = watch.call()
    long_call.__enter__()
    clock.now += 3.0
    for _ in range(3):
        with watch.call():
            pass
        clock.now += 1.0
    assert probe.calls == 3  # one probe a second at most while a call is long
    long_call.__exit__(None, None, None)
