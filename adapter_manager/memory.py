"""Giving freed heap memory back to the operating system.

Batches of varying shapes allocate and free tensors of varying sizes; glibc keeps the freed space in its
heaps, so a long-running instance's resident memory creeps up with no leak at all. `malloc_trim(0)`
returns the free pages. A background thread calls it every few seconds: ctypes releases the GIL during
the call, so classification never waits on it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

log = logging.getLogger(__name__)


def start_memory_trimmer(interval_s: float) -> threading.Thread | None:
    """Call glibc's malloc_trim(0) every `interval_s` seconds in a daemon thread; None when off or not glibc."""
    if interval_s <= 0:
        return None
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        log.info("malloc_trim is not available (not glibc); freed heap memory stays with the process")
        return None
    trim.argtypes = [ctypes.c_size_t]

    def run() -> None:
        while True:
            time.sleep(interval_s)
            trim(0)

    thread = threading.Thread(target=run, name="malloc-trim", daemon=True)
    thread.start()
    return thread
