"""Every metric deploy/monitoring/alerts.yml names is one that our services really expose.

promtool accepts an alert on a misspelled metric, which then never fires. So the names (and the labels their
selectors match on) are read out of each alert's PromQL and looked for in real scrapes: the session's
tritonserver and shim after the traffic that creates every counter, and a real etcd member.
"""

from __future__ import annotations

import re

import pytest
import requests
import yaml

from testkit.conditions import wait_for
from testkit.etcd_harness import EtcdMembers
from testkit.triton_harness import REPO

RULES = REPO / "deploy" / "monitoring" / "alerts.yml"

# A CPU host has no GPU metrics; Triton exports these per GPU (labelled gpu_uuid) with --allow-gpu-metrics,
# which run_triton.py sets for --kind=gpu (the Triton image). Named in Triton's metrics documentation.
GPU_ONLY = {
    "nv_gpu_memory_used_bytes": "Triton's DCGM metrics exist on GPU hosts only",
    "nv_gpu_memory_total_bytes": "Triton's DCGM metrics exist on GPU hosts only",
}
# Made by Prometheus itself for every scrape target, not by a target.
PROMETHEUS_OWN = {"up"}
# Labels Prometheus gives every series from its target (prometheus.yml): not in any target's exposition.
TARGET_LABELS = {"job", "instance", "node"}
# Labels prometheus.yml renames on the way in: the stored name and the exposed one.
RENAMED_LABELS = {"model_instance": "instance"}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "inf", "nan",
}  # fmt: skip
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\d[\w.]*|[A-Za-z_:][\w:]*(?:\s*\()?')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+\S+")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: every identifier that is not a function or aggregation (followed
    by `(`), a keyword, a label in a grouping clause or a matcher, a string, a number or a duration."""
    names = set()
    for token in _TOKENS.findall(_GROUPING.sub(" ", expr)):
        if token[0] in '"{[' or token[0].isdigit() or token.endswith("("):
            continue
        if token.lower() not in PROMQL_KEYWORDS:
            names.add(token)
    return names


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for every matcher of every selector in `expr`."""
    return [
        (metric, *matcher)
        for metric, body in _SELECTOR.findall(_GROUPING.sub(" ", expr))
        for matcher in _MATCHER.findall(body)
    ]


def alert_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


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


def test_the_name_reader_finds_selectors_and_nothing_else():
    expr = (
        'increase(lora_load_failures_total{code!~"a|b"}[15m]) > 0 or (x_total unless y offset 15m) > 0'
        ' and on () count by (job, le) (up{job="t"} == 1) / 1e6 > bool 0.5 or sum without (pid) (z:rate5m)'
    )
    assert metric_names(expr) == {"lora_load_failures_total", "x_total", "y", "up", "z:rate5m"}
    assert label_matchers(expr) == [("lora_load_failures_total", "code", "!~", "a|b"), ("up", "job", "=", "t")]


def test_every_alert_names_a_metric():
    """The reader cannot come back empty-handed: a rule it reads no name from fails here."""
    expressions = alert_expressions()
    assert len(expressions) >= 8
    for alert, expr in expressions.items():
        assert metric_names(expr), f"{alert}: no metric name read from {expr!r}"


def test_the_gpu_only_names_are_triton_gpu_metrics_the_alerts_use():
    """The one excuse from a real scrape: Triton's GPU metrics, on a CPU host. Nothing else may hide here."""
    named = {name for expr in alert_expressions().values() for name in metric_names(expr)}
    assert GPU_ONLY and all(name.startswith("nv_gpu_") for name in GPU_ONLY)
    assert set(GPU_ONLY) <= named, f"no alert uses {sorted(set(GPU_ONLY) - named)}"


@pytest.fixture(scope="module")
def etcd_metrics(tmp_path_factory) -> str:
    with EtcdMembers(tmp_path_factory.mktemp("etcd"), count=1) as etcd:
        return requests.get(etcd.health_url(0).removesuffix("/health") + "/metrics", timeout=10).text


@pytest.fixture
def scraped(triton, shim, api, etcd_metrics) -> dict[str, dict[str, list[dict[str, str]]]]:
    """Every target's exposition after a predict and a load refused as invalid_model (a training output whose
    label map is not a pickle, made by tests/conftest.py), so that every counter exists."""
    assert api.post("/inference/models/load", json={"model_dir": "alpha"}).status_code == 200
    assert api.post("/inference/predict", json={"model_id": "alpha", "texts": ["kaka lili"]}).status_code == 200
    refused = api.post("/inference/models/load", json={"model_dir": "broken"})
    assert (refused.status_code, refused.json()["error"]) == (422, "invalid_model"), refused.text
    root = shim.origin

    def scrape() -> dict[str, dict[str, list[dict[str, str]]]] | None:
        found = {
            "triton": exposition(triton.metrics()),
            "api": exposition(requests.get(f"{root}/metrics", timeout=10).text),
            "etcd": exposition(etcd_metrics),
        }
        return found if "lora_load_failures_total" in found["triton"] else None

    return wait_for(scrape, 30, "lora_load_failures_total in Triton's metrics")


def test_every_metric_an_alert_names_is_exposed(scraped):
    exposed = {name for samples in scraped.values() for name in samples}
    named = {name: alert for alert, expr in alert_expressions().items() for name in metric_names(expr)}
    missing = [
        f"{name} ({alert})" for name, alert in named.items() if name not in exposed | set(GPU_ONLY) | PROMETHEUS_OWN
    ]
    assert not missing, f"alerts.yml names metrics no scrape exposes: {sorted(missing)}"


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
