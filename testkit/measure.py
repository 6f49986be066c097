"""Summary statistics and measurements for benchmarks and the tests that check them."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence

MB = 1024 * 1024


def summary(values: Sequence[float], digits: int = 0) -> str:
    """median [min-max], or the one value when there is only one."""
    fmt = f"{{:.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def throughput(
    fn: Callable[[], object], per_call: int, seconds: float, sync: Callable[[], None] = lambda: None
) -> float:
    """Items per second of `fn` (`per_call` items a call) over at least `seconds` and 3 calls, after one
    warm-up call; `sync` waits for queued work (a GPU's) before each clock reading."""
    fn()
    sync()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 3:
        fn()
        calls += 1
    sync()
    return calls * per_call / (time.perf_counter() - started)


def rss_mb(process=None, with_children: bool = False) -> float:
    """Resident memory in MB of `process` (a psutil.Process; default: this one, after a garbage collection),
    with its children's if asked."""
    import psutil

    if process is None:
        gc.collect()
        process = psutil.Process()
    processes = [process] + (process.children(recursive=True) if with_children else [])
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / MB
