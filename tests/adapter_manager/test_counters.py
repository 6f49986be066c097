"""Metric counts summed in memory and sent by a thread: none lost, none sent twice, a failed send kept."""

from __future__ import annotations

import threading
from collections import Counter

from adapter_manager.counters import PendingCounts
from testkit.conditions import wait_for


def test_counts_added_from_many_threads_arrive_summed_and_once():
    sent: Counter = Counter()
    calls = []
    pending = PendingCounts(lambda key, n: (sent.update({key: n}), calls.append(key)), interval_s=0.05).start()

    def add(i: int) -> None:
        for _ in range(500):
            pending.add(Counter({("texts", f"m{i % 3}"): 2, ("requests", f"m{i % 3}"): 1}))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: sum(sent.values()) == 6 * 500 * 3, 10, "every count sent")
    pending.close()
    assert sent == Counter({(f, f"m{i}"): n * 1000 for i in range(3) for f, n in (("texts", 2), ("requests", 1))})
    assert len(calls) < 6 * 500  # summed: far fewer sends than adds


def test_a_failed_send_keeps_its_count_and_the_rest_for_the_next_flush():
    sent: Counter = Counter()
    failing = {"b"}

    def send(key, n):
        if key in failing:
            raise OSError("tritonserver did not answer")
        sent[key] += n

    pending = PendingCounts(send, interval_s=60)  # flushed by hand here
    pending.add(Counter({"a": 1, "b": 2, "c": 3}))
    pending.flush()
    assert sent["a"] == 1 and "b" not in sent
    failing.clear()
    pending.add(Counter({"b": 1}))
    pending.close()  # close flushes what is left
    assert sent == Counter({"a": 1, "b": 3, "c": 3})
