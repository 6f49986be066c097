"""The supervisor's rules without processes: backoff, giving up, exit causes; and what TRITON_INSTANCES=auto picks."""

from __future__ import annotations

import importlib.util
import signal
import sys

import pytest

from testkit.triton_harness import REPO


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


supervisor = load("supervisor")
run_triton = load("run_triton")


def test_backoff_doubles_to_30_s_and_resets_after_a_minute_healthy():
    policy = supervisor.RestartPolicy()
    delays = [policy.after_exit(ran_for_s=120, healthy_for_s=10) for _ in range(7)]
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert policy.after_exit(ran_for_s=200, healthy_for_s=61) == 1
    assert policy.after_exit(ran_for_s=200, healthy_for_s=5) == 2


def test_five_failed_starts_in_a_row_give_up_and_a_long_run_breaks_the_streak():
    policy = supervisor.RestartPolicy()
    assert [policy.after_exit(5, 0) for _ in range(4)] == [1, 2, 4, 8]
    assert policy.after_exit(70, 0) == 16  # ran past a minute: not a failed start
    assert [policy.after_exit(5, 0) for _ in range(4)] == [30, 30, 30, 30]
    assert policy.after_exit(5, 0) is None


def test_exit_causes_are_named():
    assert supervisor.describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert supervisor.describe_exit(1) == "exit code 1"


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (3, 3), (4, 4), (16, 4), (128, 4)])
def test_auto_instances_follow_the_cores_on_cpu(cores, expected):
    assert run_triton.auto_instances("cpu", cores) == expected


def test_auto_is_one_instance_per_gpu_and_an_explicit_count_wins():
    assert run_triton.auto_instances("gpu", 64) == 1
    assert run_triton.instance_count("3", "cpu") == 3
    with pytest.raises(Exception, match="positive integer or auto"):
        run_triton.instance_count("0", "cpu")
