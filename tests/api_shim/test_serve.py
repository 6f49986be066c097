"""`make serve`'s script: Triton and the shim come up together and SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import requests

from triton_harness import REPO, free_port


def test_serve_starts_both_and_stops_both(tmp_path, base_dir, triton_models_root):
    api_port = free_port()
    env = {
        **os.environ,
        "BASE_MODEL_DIR": str(base_dir),
        "MODELS_ROOT": str(triton_models_root),
        "STATE_DIR": str(tmp_path / "state"),
        "API_PORT": str(api_port),
        "TRITON_HTTP_PORT": str(free_port()),
        "TRITON_GRPC_PORT": str(free_port()),
        "TRITON_METRICS_PORT": str(free_port()),
        "GUNICORN_WORKERS": "1",
    }
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([sys.executable, str(REPO / "scripts" / "serve.py")], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://localhost:{api_port}/api/v1"
    output = tmp_path / "serve.log"
    try:
        # A user waits for serve to print its URL; so does this test.
        deadline = time.monotonic() + 180
        while "ready at" not in output.read_text():
            assert serve.poll() is None and time.monotonic() < deadline, output.read_text()[-3000:]
            time.sleep(0.2)
        assert requests.post(f"{base}/inference/models/load", json={"model_dir": "alpha"}, timeout=60).status_code == 200
        assert requests.post(f"{base}/inference/predict", json={"model_id": "alpha", "texts": ["baba"]}, timeout=60).status_code == 200
        assert requests.get(f"{base}/inference/status", timeout=60).json()["service_status"] == "running"
        descendants = psutil.Process(serve.pid).children(recursive=True)
        assert any(p.name() == "tritonserver" for p in descendants)
        assert any("gunicorn" in " ".join(p.cmdline()) for p in descendants)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    assert serve.returncode == 0
    time.sleep(0.5)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
