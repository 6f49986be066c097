"""deploy/monitoring: Prometheus' configuration and alert rules pass promtool, and every alert is unit-tested.

promtool comes from Debian's `prometheus` package (`make venv` installs it). It checks syntax and PromQL, not
metric names: tests/monitoring/test_metric_names.py checks those against lora_core/metric_names.py, and
tests/api_shim/test_alert_metric_names.py against real scrapes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from testkit.triton_harness import REPO

MONITORING = REPO / "deploy" / "monitoring"
CONFIG, RULES, RULE_TESTS = MONITORING / "prometheus.yml", MONITORING / "alerts.yml", MONITORING / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: install Debian's prometheus package (`make venv` does)", pytrace=False)
    return subprocess.run([binary, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_prometheus_config_is_valid():
    done = promtool("check", "config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_are_valid():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_pass_their_unit_tests():
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_config_loads_the_rules_that_are_tested():
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    assert yaml.safe_load(RULE_TESTS.read_text())["rule_files"] == [RULES.name]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"triton", "api", "etcd"} <= jobs


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_a_for_a_severity_and_what_to_tell_a_human(rule):
    assert rule.get("for"), f"{rule['alert']}: no `for:`, a single bad scrape would page"
    assert rule.get("labels", {}).get("severity") in {"critical", "warning"}
    assert {"summary", "description"} <= set(rule.get("annotations", {}))


def test_every_alert_is_fired_and_cleared_by_a_promtool_test():
    """Each alert has a test group in which it fires and, at a later time, has cleared: an alert added to
    alerts.yml without a test fails here."""
    fired_and_cleared: set[str] = set()
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        firing: dict[str, float] = {}
        cleared: dict[str, list[float]] = {}
        for case in group.get("alert_rule_test", []):
            name, at = case["alertname"], seconds(case["eval_time"])
            if case.get("exp_alerts"):
                firing[name] = min(at, firing.get(name, at))
            else:
                cleared.setdefault(name, []).append(at)
        fired_and_cleared |= {name for name, at in firing.items() if any(t > at for t in cleared.get(name, []))}
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) >= 8
    missing = sorted(names - fired_and_cleared)
    assert not missing, f"alerts without a promtool test that fires and then clears them: {missing}"


def seconds(duration: str) -> float:
    """A Prometheus duration (`90s`, `5m`, `1h30m`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, number = 0.0, ""
    rest = str(duration)
    while rest:
        if rest[0].isdigit():
            number, rest = number + rest[0], rest[1:]
            continue
        unit = "ms" if rest.startswith("ms") else rest[0]
        total += float(number) * units[unit]
        number, rest = "", rest[len(unit) :]
    assert not number, f"a duration without a unit: {duration!r}"
    return total


def test_triton_is_started_with_queue_time_quantiles():
    """The queue-time alert needs Triton's summaries; every deployment runs tritonserver through
    run_triton.py (make serve, make cluster, the Triton image's CMD, hence compose and Kubernetes)."""
    assert '"--metrics-config=summary_latencies=true"' in (REPO / "scripts" / "run_triton.py").read_text()
    assert "scripts/run_triton.py" in (REPO / "scripts" / "docker" / "triton.Dockerfile").read_text()


def test_compose_runs_prometheus_in_the_monitoring_profile_against_these_files():
    environ = {k: v for k, v in os.environ.items() if k != "CONTROL_TOKEN"} | {"CONTROL_TOKEN": "a-long-secret"}
    done = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--profile", "monitoring", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"]), "pin a release"
    assert f"{MONITORING}:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert all(str(port).startswith("127.0.0.1:") for port in prometheus["ports"]), "no login: loopback only"
    # The static targets are these services' ports: Triton's metrics port (the image's CMD) and the shim's.
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in yaml.safe_load(CONFIG.read_text())["scrape_configs"]
        if "static_configs" in job
    }
    assert targets == {"triton": ["triton:8002"], "api": [f"api:{services['api']['environment']['API_PORT']}"]}
    assert "--metrics-port=8002" in (REPO / "scripts" / "docker" / "triton.Dockerfile").read_text()
