"""Reading Prometheus text (Triton's metrics): memory per device, the queue of pending requests, our gauges."""

from __future__ import annotations

import re
from dataclasses import dataclass

import requests

from lora_core.errors import BackendUnavailable

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class MetricsSnapshot:
    """Parsed samples of one scrape."""

    def __init__(self, text: str) -> None:
        self.samples: list[Sample] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            try:
                value = float(match.group(3))
            except ValueError:
                continue
            labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(match.group(2) or "")}
            self.samples.append(Sample(match.group(1), labels, value))

    def value(self, name: str, **labels: str) -> float | None:
        """The first sample of `name` whose labels include `labels`, or None."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in self.samples if s.name == name and label in s.labels}


def read_metrics(url: str, timeout: float = 2.0) -> MetricsSnapshot:
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise BackendUnavailable(f"Triton metrics are unreachable at {url}: {type(exc).__name__}") from exc
    return MetricsSnapshot(response.text)
