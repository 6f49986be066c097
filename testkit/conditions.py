"""Waiting on a condition with a bounded timeout, never on a sleep of a guessed length."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call `check` until it returns a truthy value and return that value; AssertionError naming `what`, with
    the last value seen, once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout:.0f} s (last seen: {value!r})"[:2000])
        time.sleep(interval)


def settled(read: Callable[[], T], quiet_s: float, timeout: float, what: str) -> T:
    """`read()` once it gives the same value twice `quiet_s` apart: for counts that arrive late (the model's metric
    counts reach Triton within its METRICS_FLUSH_S), read before a test's own traffic."""
    deadline = time.monotonic() + timeout
    last = read()
    while True:
        time.sleep(quiet_s)
        now = read()
        if now == last:
            return now
        assert time.monotonic() < deadline, f"{what} still changing after {timeout} s: {now}"
        last = now
