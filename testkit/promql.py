"""The metric names (and label matchers) deploy/monitoring's PromQL uses, read out of the files.

The alert rules, their promtool tests and Prometheus' configuration cannot import lora_core.metric_names, and
promtool accepts an alert on a misspelled metric, which then never fires; tests compare what is read here with
the module (tests/monitoring/test_metric_names.py) and with real scrapes (tests/api_shim/test_alert_metric_names.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from testkit.triton_harness import REPO

MONITORING = REPO / "deploy" / "monitoring"
CONFIG, RULES, RULE_TESTS = MONITORING / "prometheus.yml", MONITORING / "alerts.yml", MONITORING / "alerts_test.yml"

# Made by Prometheus itself for every scrape target, not by a target.
PROMETHEUS_OWN = frozenset({"up"})

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "inf", "nan",
}  # fmt: skip
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\d[\w.]*|[A-Za-z_:][\w:]*(?:\s*\()?')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


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
    """Alert name -> its PromQL, from alerts.yml."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def rule_test_selectors() -> list[str]:
    """The PromQL of alerts_test.yml: every input series (a selector) and every promql_expr_test expression."""
    found = []
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        found += [series["series"] for series in group.get("input_series", [])]
        found += [case["expr"] for case in group.get("promql_expr_test", [])]
    return found


def named_in_monitoring() -> dict[str, str]:
    """Every metric name alerts.yml and alerts_test.yml use -> where one use is (for a failure's message)."""
    named = {name: f"alerts.yml: {alert}" for alert, expr in alert_expressions().items() for name in metric_names(expr)}
    for selector in rule_test_selectors():
        for name in metric_names(selector):
            named.setdefault(name, f"alerts_test.yml: {selector}")
    return named


def name_relabelings() -> list[dict[str, Any]]:
    """prometheus.yml's relabelings that read or write a metric's name (`__name__`): none today, so the
    configuration names no metric; a test fails if one appears, so that its names get checked too."""

    def relabelings(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"relabel_configs", "metric_relabel_configs", "write_relabel_configs"}:
                    yield from value
                else:
                    yield from relabelings(value)
        elif isinstance(node, list):
            for item in node:
                yield from relabelings(item)

    config = yaml.safe_load(CONFIG.read_text())
    return [
        step
        for step in relabelings(config)
        if "__name__" in step.get("source_labels", []) or step.get("target_label") == "__name__"
    ]
