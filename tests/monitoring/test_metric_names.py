"""The metric names deploy/monitoring uses are the ones lora_core/metric_names.py defines.

The alert rules and their promtool tests cannot import the module, so a rename on one side alone would leave an
alert that never fires (promtool accepts any name). Whether the services really expose these names is checked
against live scrapes by tests/api_shim/test_alert_metric_names.py.
"""

from __future__ import annotations

from lora_core import metric_names
from testkit.promql import (
    PROMETHEUS_OWN,
    alert_expressions,
    label_matchers,
    metric_names as names_in,
    name_relabelings,
    named_in_monitoring,
    rule_test_selectors,
)


def test_the_name_reader_finds_selectors_and_nothing_else():
    expr = (
        'increase(lora_load_failures_total{code!~"a|b"}[15m]) > 0 or (x_total unless y offset 15m) > 0'
        ' and on () count by (job, le) (up{job="t"} == 1) / 1e6 > bool 0.5 or sum without (pid) (z:rate5m)'
    )
    assert names_in(expr) == {"lora_load_failures_total", "x_total", "y", "up", "z:rate5m"}
    assert label_matchers(expr) == [("lora_load_failures_total", "code", "!~", "a|b"), ("up", "job", "=", "t")]


def test_every_alert_and_every_input_series_names_a_metric():
    """The reader cannot come back empty-handed: a rule or a series it reads no name from fails here."""
    expressions = alert_expressions()
    assert len(expressions) >= 8
    for alert, expr in expressions.items():
        assert names_in(expr), f"{alert}: no metric name read from {expr!r}"
    selectors = rule_test_selectors()
    assert len(selectors) >= 10
    for selector in selectors:
        assert names_in(selector), f"alerts_test.yml: no metric name read from {selector!r}"


def test_the_rules_and_their_tests_name_only_metrics_the_module_defines():
    named = named_in_monitoring()
    unknown = [f"{name} ({where})" for name, where in named.items() if name not in metric_names.ALL | PROMETHEUS_OWN]
    assert not unknown, f"not in lora_core/metric_names.py (a typo, or a rename on one side): {sorted(unknown)}"


def test_the_module_says_which_names_the_alerts_use():
    """ALERTED is the alerts' names exactly: a name an alert stopped using, or a new one, is noticed here."""
    alerted = {name for expr in alert_expressions().values() for name in names_in(expr)} - PROMETHEUS_OWN
    assert alerted == metric_names.ALERTED


def test_prometheus_config_names_no_metric():
    """prometheus.yml selects and renames labels only; a relabeling on `__name__` would name metrics unchecked."""
    assert name_relabelings() == []
