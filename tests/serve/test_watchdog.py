"""The Triton image's entry point (`run_triton.py --watchdog`): a hung tritonserver ends the container's main
process, so that the container's restart policy replaces it; SIGTERM ends it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import requests

from testkit.process_harness import free_port
from testkit.triton_harness import REPO, server_settings


def start(tmp_path, base_dir, triton_models_root) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        **server_settings(base_dir, triton_models_root, tmp_path / "state"),
        "TRITON_HANG_TIMEOUT_S": "3",
    }
    command = [
        sys.executable,
        str(REPO / "scripts" / "run_triton.py"),
        "--watchdog",
        "--instances=1",
        f"--http-port={port}",
        f"--grpc-port={free_port()}",
        f"--metrics-port={free_port()}",
        f"--run-dir={tmp_path / 'run'}",
    ]
    log = (tmp_path / "triton.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while not _ready(port):
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "triton.log").read_text()[-3000:]
        time.sleep(0.2)
    return process, port


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_a_hung_tritonserver_ends_the_watchdog_and_everything_under_it(tmp_path, base_dir, triton_models_root):
    process, _ = start(tmp_path, base_dir, triton_models_root)
    watchdog = psutil.Process(process.pid)
    everything = watchdog.children(recursive=True)
    try:
        server = next(p for p in everything if p.name() == "tritonserver")
        server.suspend()
        assert process.wait(timeout=30) == 1
        assert "stopped answering its health endpoint" in (tmp_path / "triton.log").read_text()
        assert not [p for p in everything if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:  # tritonserver runs in a session of its own: a failed test must not leave it behind
        for leftover in [watchdog, *everything]:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:  # gone already, as it should be
                pass


def test_sigterm_stops_the_watchdog_and_tritonserver(tmp_path, base_dir, triton_models_root):
    process, port = start(tmp_path, base_dir, triton_models_root)
    everything = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert not _ready(port)
    assert not [p for p in everything if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
