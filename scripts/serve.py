"""`make serve`: Triton (scripts/run_triton.py) and the REST shim (gunicorn), in the foreground.

Ctrl-C or SIGTERM stops both and leaves no process behind; if either exits, the other is stopped too.
Reads BASE_MODEL_DIR, MODELS_ROOT, STATE_DIR, API_PORT, API_KEY, TRITON_INSTANCES, TRITON_KIND and the
Triton ports TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT (8010-8012).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True)


def stop(processes: list[subprocess.Popen], grace: float = 30) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_ready(url: str, processes: list[subprocess.Popen], timeout: float = 600) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def main() -> int:
    env = dict(os.environ)
    missing = [name for name in ("BASE_MODEL_DIR", "MODELS_ROOT") if not env.get(name)]
    if missing:
        print(f"serve: set {' and '.join(missing)} (see README)", file=sys.stderr)
        return 2
    env.setdefault("STATE_DIR", str(REPO / "var" / "state"))
    api_port = env.setdefault("API_PORT", "8000")
    http_port = env.setdefault("TRITON_HTTP_PORT", "8010")
    env.setdefault("TRITON_GRPC_PORT", "8011")
    metrics_port = env.setdefault("TRITON_METRICS_PORT", "8012")
    env.setdefault("TRITON_URL", f"localhost:{http_port}")
    env.setdefault("TRITON_METRICS_URL", f"http://localhost:{metrics_port}/metrics")

    python = sys.executable
    triton = start([python, str(REPO / "scripts" / "run_triton.py"), f"--instances={env.get('TRITON_INSTANCES', '1')}",
                    f"--kind={env.get('TRITON_KIND', 'cpu')}"], env)
    shim = start([str(Path(python).parent / "gunicorn"), "-c", str(REPO / "api_shim" / "gunicorn.conf.py"),
                  "api_shim.wsgi:app"], env)
    processes = [triton, shim]

    def on_signal(signum, _frame):
        print(f"\nserve: stopping (signal {signum})", flush=True)
        stop(processes)
        sys.exit(0)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    base = f"http://localhost:{api_port}/api/v1"
    if wait_ready(f"{base}/health/ready", processes):
        print(f"\nserve: ready at {base}\n  curl -s {base}/inference/status\n", flush=True)
    while all(p.poll() is None for p in processes):
        time.sleep(0.5)
    failed = next(p for p in processes if p.poll() is not None)
    name = "tritonserver" if failed is triton else "gunicorn"
    print(f"serve: {name} exited with {failed.returncode}; stopping", file=sys.stderr, flush=True)
    stop(processes)
    return failed.returncode or 1


if __name__ == "__main__":
    raise SystemExit(main())
