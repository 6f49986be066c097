"""`make serve`: Triton (scripts/run_triton.py) and the REST shim (gunicorn), in the foreground.

With neither BASE_MODEL_DIR nor MODELS_ROOT set, it serves the built-in demo (scripts/demo/): the demo
classifiers are trained on first run and loaded once the service is ready. Ctrl-C or SIGTERM stops both
processes and leaves none behind; if either exits, the other is stopped too. Reads BASE_MODEL_DIR,
MODELS_ROOT, STATE_DIR, API_PORT, API_KEY, TRITON_INSTANCES, TRITON_KIND and the Triton ports
TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT (8010-8012).
"""

from __future__ import annotations

import json
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


def post(url: str, body: dict, api_key: str | None) -> None:
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120):
            pass
    except OSError as exc:
        print(f"serve: could not load demo model {body['model_dir']}: {exc}", file=sys.stderr, flush=True)


def main() -> int:
    env = dict(os.environ)
    demo: dict[str, float] = {}
    if not env.get("BASE_MODEL_DIR") and not env.get("MODELS_ROOT"):
        sys.path.insert(0, str(REPO / "scripts" / "demo"))
        from prepare import prepare

        base, models, demo = prepare(REPO / "var" / "demo")
        env.update(BASE_MODEL_DIR=str(base), MODELS_ROOT=str(models))
        env.setdefault("STATE_DIR", str(REPO / "var" / "demo" / "state"))
    missing = [name for name in ("BASE_MODEL_DIR", "MODELS_ROOT") if not env.get(name)]
    if missing:
        print(f"serve: set {' and '.join(missing)} too, or neither for the demo (see README)", file=sys.stderr)
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
        for task in demo:
            post(f"{base}/inference/models/load", {"model_dir": task, "max_length": 64}, env.get("API_KEY"))
        print(f"\nserve: ready at {base}", flush=True)
        for task, accuracy in demo.items():
            print(f"  demo model {task}: held-out accuracy {accuracy:.1%}", flush=True)
        if demo:
            example = json.dumps({"model_id": "support_intent", "texts": ["Where is my package?", "I want my money back"]})
            print(f"  curl -s -X POST {base}/inference/predict -H 'Content-Type: application/json' -d '{example}'", flush=True)
        print(f"  curl -s {base}/inference/status\n", flush=True)
    while all(p.poll() is None for p in processes):
        time.sleep(0.5)
    failed = next(p for p in processes if p.poll() is not None)
    name = "tritonserver" if failed is triton else "gunicorn"
    print(f"serve: {name} exited with {failed.returncode}; stopping", file=sys.stderr, flush=True)
    stop(processes)
    return failed.returncode or 1


if __name__ == "__main__":
    raise SystemExit(main())
