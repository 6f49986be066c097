"""Client traffic for fault tests: threads sending predictions back to back while something breaks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from collections.abc import Sequence

import requests

PREDICT = "/inference/predict"


@dataclass
class Outcome:
    started: float
    finished: float
    status: int | None  # None: no HTTP answer (the connection failed)
    error: str  # the contract's error code, the exception's name (": refused" added for a refused connection), or ""
    model_id: str
    body: dict | None

    @property
    def latency(self) -> float:
        return self.finished - self.started


class Traffic:
    """`clients` threads, each sending predictions of `texts` to the API at `base` back to back, on fresh
    connections; nothing is retried."""

    def __init__(
        self,
        base: str,
        model_ids: list[str],
        clients: int,
        timeout: float = 30,
        texts: Sequence[str] = ("baba dede kiki", "类别 好坏", "lolo mumu nana fafa"),
        pause_after_error_s: float = 0.0,
    ) -> None:
        self.base, self.model_ids, self.timeout, self.texts = base, model_ids, timeout, list(texts)
        self.pause_after_error_s = pause_after_error_s  # as a client backing off would; 0: straight on
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a client is still waiting for an answer"

    def _run(self, client: int) -> None:
        n = client
        while not self._stop.is_set():
            model_id = self.model_ids[n % len(self.model_ids)]
            n += 1
            started = time.monotonic()
            status, error, body = None, "", None
            try:
                response = requests.post(
                    f"{self.base}{PREDICT}", json={"model_id": model_id, "texts": self.texts}, timeout=self.timeout
                )
                status, body = response.status_code, response.json()
                error = "" if status == 200 else body.get("error", "?")
            except (requests.RequestException, ValueError) as exc:
                error = type(exc).__name__ + (": refused" if "refused" in str(exc).lower() else "")
            with self._lock:
                self.outcomes.append(Outcome(started, time.monotonic(), status, error, model_id, body))
            if error:
                self._stop.wait(self.pause_after_error_s)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.outcomes) >= count, f"only {len(self.outcomes)} answers in {timeout}s"

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.started >= moment]


def summary(outcomes: list[Outcome]) -> dict[tuple[int | None, str], int]:
    counts: dict[tuple[int | None, str], int] = {}
    for o in outcomes:
        counts[(o.status, o.error)] = counts.get((o.status, o.error), 0) + 1
    return counts
