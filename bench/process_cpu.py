"""CPU seconds of a service's processes from /proc (psutil), by class: the shim's gunicorn, tritonserver, the Python
backend's stubs. bench/overhead.py and the GPU check read them before and after a measured window."""

from __future__ import annotations

import psutil

CLASSES = ("shim", "tritonserver", "stubs", "other")


def process_class(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    if "triton_python_backend_stub" in command:
        return "stubs"
    if process.name() == "tritonserver":
        return "tritonserver"
    if "gunicorn" in command:
        return "shim"
    return "other"


def cpu_by_process(roots: list[int]) -> dict[int, tuple[str, float]]:
    """pid -> (class, CPU seconds so far) for every process under `roots`."""
    found: dict[int, tuple[str, float]] = {}
    for root in roots:
        try:
            top = psutil.Process(root)
            for process in [top, *top.children(recursive=True)]:
                with process.oneshot():
                    times = process.cpu_times()
                    found[process.pid] = (process_class(process), times.user + times.system)
        except psutil.Error:
            continue
    return found


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two readings, per class (a process that started between them from 0)."""
    spent = dict.fromkeys(CLASSES, 0.0)
    for pid, (kind, seconds) in after.items():
        spent[kind] += seconds - before.get(pid, (kind, 0.0))[1]
    return spent
