"""lora_core.metric_names: every constant is a valid, distinct metric name, and in the group of its exporter."""

from __future__ import annotations

import re

from lora_core import metric_names

CONSTANTS = {key: value for key, value in vars(metric_names).items() if key.isupper() and isinstance(value, str)}
GROUPS = {
    "MODEL_METRICS": metric_names.MODEL_METRICS,
    "SHIM_METRICS": metric_names.SHIM_METRICS,
    "TRITON_METRICS": metric_names.TRITON_METRICS,
    "ETCD_METRICS": metric_names.ETCD_METRICS,
}


def test_each_constant_is_named_after_its_value_and_is_a_metric_name():
    assert len(CONSTANTS) >= 15
    for key, value in CONSTANTS.items():
        assert key == value.upper(), f"{key} = {value!r}: name the constant after the metric, so both grep"
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", value), value


def test_each_name_is_in_exactly_one_exporters_group():
    assert len(set(CONSTANTS.values())) == len(CONSTANTS)
    assert metric_names.ALL == set(CONSTANTS.values())
    assert sum(len(group) for group in GROUPS.values()) == len(metric_names.ALL)  # disjoint


def test_the_prefixes_say_who_exports_them():
    assert all(n.startswith("lora_") and not n.startswith("lora_api_") for n in metric_names.MODEL_METRICS)
    assert all(n.startswith("lora_api_") for n in metric_names.SHIM_METRICS)
    assert all(n.startswith("nv_") for n in metric_names.TRITON_METRICS)
    assert metric_names.TRITON_GPU_ONLY <= metric_names.TRITON_METRICS
    assert metric_names.ALERTED <= metric_names.ALL
