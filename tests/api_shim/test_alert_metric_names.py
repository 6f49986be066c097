"""Every metric deploy/monitoring/alerts.yml names, and every one lora_core/metric_names.py defines, is one that our
services really expose.

promtool accepts an alert on a misspelled metric, which then never fires. So the names (and the labels their
selectors match on) are read out of each alert's PromQL and looked for in real scrapes: the session's
tritonserver and shim after the traffic that creates every counter, and a real etcd member. That the alerts name
only the module's metrics is checked without servers, by tests/monitoring/test_metric_names.py.
"""

from __future__ import annotations

import re

import pytest
import requests

from lora_core import metric_names
from lora_core.metric_names import LORA_FAILURES_TOTAL, LORA_LOAD_FAILURES_TOTAL, LORA_REQUESTS_TOTAL, LORA_TEXTS_TOTAL
from testkit.conditions import wait_for
from testkit.etcd_harness import EtcdMembers
from testkit.promql import PROMETHEUS_OWN, alert_expressions, label_matchers
from testkit.promql import metric_names as names_in

# A CPU host has no GPU metrics; Triton exports these per GPU (labelled gpu_uuid) with --allow-gpu-metrics,
# which run_triton.py sets for --kind=gpu (the Triton image). Named in Triton's metrics documentation.
GPU_ONLY = metric_names.TRITON_GPU_ONLY
# Labels Prometheus gives every series from its target (prometheus.yml): not in any target's exposition.
TARGET_LABELS = {"job", "instance", "node"}
# Labels prometheus.yml renames on the way in: the stored name and the exposed one.
RENAMED_LABELS = {"model_instance": "instance"}
# What the scraped fixture's traffic makes the model count; each instance sends its counts every METRICS_FLUSH_S.
COUNTED = {LORA_REQUESTS_TOTAL, LORA_TEXTS_TOTAL, LORA_FAILURES_TOTAL, LORA_LOAD_FAILURES_TOTAL}
# Each exporter's scrape, by the module's group of the names it exports.
EXPORTERS = {
    "triton": metric_names.MODEL_METRICS | metric_names.TRITON_METRICS,
    "api": metric_names.SHIM_METRICS,
    "etcd": metric_names.ETCD_METRICS,
}

_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+\S+")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def exposition(text: str) -> dict[str, list[dict[str, str]]]:
    """Prometheus text format: metric name -> the label sets of its samples. A histogram's or summary's
    _bucket/_sum/_count samples count under its base name too."""
    samples: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels = match.group(1), dict(_LABEL.findall(match.group(2) or ""))
        samples.setdefault(name, []).append(labels)
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix):
                samples.setdefault(name.removesuffix(suffix), []).append(labels)
    return samples


def test_the_gpu_only_names_are_triton_gpu_metrics_the_alerts_use():
    """The one excuse from a real scrape: Triton's GPU metrics, on a CPU host. Nothing else may hide here."""
    named = {name for expr in alert_expressions().values() for name in names_in(expr)}
    assert GPU_ONLY and all(name.startswith("nv_gpu_") for name in GPU_ONLY)
    assert set(GPU_ONLY) <= named, f"no alert uses {sorted(set(GPU_ONLY) - named)}"


def test_every_exporter_is_given_its_names():
    """EXPORTERS covers the module: a group added there without a scrape to look in fails here."""
    assert set().union(*EXPORTERS.values()) == metric_names.ALL


@pytest.fixture(scope="module")
def etcd_metrics(tmp_path_factory) -> str:
    with EtcdMembers(tmp_path_factory.mktemp("etcd"), count=1) as etcd:
        return requests.get(etcd.health_url(0).removesuffix("/health") + "/metrics", timeout=10).text


@pytest.fixture
def scraped(triton, shim, api, etcd_metrics) -> dict[str, dict[str, list[dict[str, str]]]]:
    """Every target's exposition after a predict, a predict of a model not loaded, and a load refused as
    invalid_model (a training output whose label map is not a pickle, made by tests/conftest.py), so that every
    counter exists."""
    assert api.post("/inference/models/load", json={"model_dir": "alpha"}).status_code == 200
    assert api.post("/inference/predict", json={"model_id": "alpha", "texts": ["kaka lili"]}).status_code == 200
    unloaded = api.post("/inference/predict", json={"model_id": "never-loaded", "texts": ["kaka"]})
    assert unloaded.json()["error"] == "model_not_loaded", unloaded.text
    refused = api.post("/inference/models/load", json={"model_dir": "broken"})
    assert (refused.status_code, refused.json()["error"]) == (422, "invalid_model"), refused.text
    root = shim.origin

    def scrape() -> dict[str, dict[str, list[dict[str, str]]]] | None:
        found = {
            "triton": exposition(triton.metrics()),
            "api": exposition(requests.get(f"{root}/metrics", timeout=10).text),
            "etcd": exposition(etcd_metrics),
        }
        return found if COUNTED <= set(found["triton"]) else None

    return wait_for(scrape, 30, f"{sorted(COUNTED)} in Triton's metrics")


def test_every_metric_an_alert_names_is_exposed(scraped):
    exposed = {name for samples in scraped.values() for name in samples}
    named = {name: alert for alert, expr in alert_expressions().items() for name in names_in(expr)}
    missing = [f"{name} ({alert})" for name, alert in named.items() if name not in exposed | GPU_ONLY | PROMETHEUS_OWN]
    assert not missing, f"alerts.yml names metrics no scrape exposes: {sorted(missing)}"


def test_every_metric_the_module_defines_is_exposed_by_its_exporter(scraped):
    """The converse: lora_core/metric_names.py lists no name its exporter does not (a stale or misspelled one)."""
    missing = [
        f"{name} ({exporter})"
        for exporter, names in EXPORTERS.items()
        for name in sorted(names - GPU_ONLY)
        if name not in scraped[exporter]
    ]
    assert not missing, f"defined in lora_core/metric_names.py but not exposed: {missing}"


def test_every_label_an_alert_matches_on_is_exposed(scraped):
    """`quantile="0.95"` must be one of Triton's quantiles, `code` a label of the load failures, ..."""
    exposed: dict[str, list[dict[str, str]]] = {}
    for samples in scraped.values():
        for name, label_sets in samples.items():
            exposed.setdefault(name, []).extend(label_sets)
    problems = []
    for alert, expr in alert_expressions().items():
        for metric, label, operator, value in label_matchers(expr):
            if metric in GPU_ONLY or metric in PROMETHEUS_OWN or label in TARGET_LABELS:
                continue
            label = RENAMED_LABELS.get(label, label)
            label_sets = exposed.get(metric, [])
            if not any(label in labels and (operator != "=" or labels[label] == value) for labels in label_sets):
                seen = sorted({labels.get(label, "-") for labels in label_sets})
                problems.append(f"{alert}: {metric}{{{label}{operator}{value!r}}}, exposed values: {seen}")
    assert not problems, problems
