"""Reading Prometheus text (Triton's metrics): memory per device, the queue of pending requests, our gauges."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

from lora_core.errors import BackendUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class MetricsSnapshot:
    """Parsed samples of one scrape.

    prometheus_client's parser names every counter sample `<family>_total`, while Triton exposes some without
    the suffix (`nv_inference_count`): a counter's samples are found under both names.
    """

    def __init__(self, text: str) -> None:
        self.samples: list[Sample] = []
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    self.samples.append(Sample(sample.name, dict(sample.labels), sample.value))
                    if family.type == "counter" and sample.name == f"{family.name}_total":
                        self.samples.append(Sample(family.name, dict(sample.labels), sample.value))
        except ValueError as exc:  # the families completed before the bad line are kept
            log.warning("a metrics scrape has a malformed line; the rest of it is ignored: %s", exc)

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
