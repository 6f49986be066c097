"""`make serve`: Triton (scripts/run_triton.py) and the REST shim (gunicorn), supervised, in the foreground.

With neither BASE_MODEL_DIR nor MODELS_ROOT set, it serves the built-in demo (scripts/demo/): the demo
classifiers are trained on first run and loaded once the service is ready.

tritonserver and the gunicorn master are restarted when they die or hang (scripts/supervisor.py); the shim
answers 503 backend_unavailable meanwhile, and Triton brings the loaded adapters back from the desired state
in STATE_DIR. Ctrl-C or SIGTERM stops the shim first (in-flight requests finish within DRAIN_TIMEOUT_S),
then Triton, and leaves no process behind. A backend that cannot start at all (5 failed starts in a row)
ends the run with its cause and a non-zero exit.

Reads BASE_MODEL_DIR, MODELS_ROOT, STATE_DIR, RUN_DIR, API_PORT, API_KEY, CONTROL_TOKEN, TRITON_INSTANCES,
TRITON_KIND, TRITON_BIND_ADDRESS, the Triton ports TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT
(8010-8012), TRITON_HANG_TIMEOUT_S, TRITON_START_TIMEOUT_S and DRAIN_TIMEOUT_S.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import urllib.request
from pathlib import Path

from supervisor import Child, SupervisionSettings, Supervisor, log  # puts the checkout on sys.path

from lora_core.settings import read

REPO = Path(__file__).resolve().parents[1]
TOKEN_FILE = "control-token"


def control_token(state_dir: Path) -> str:
    """The secret shared by the shim and Triton: kept in STATE_DIR (mode 0600), made on first use."""
    path = state_dir / TOKEN_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


def settled(env: dict[str, str], name: str) -> str:
    """The setting `name` as `env` sets it, else its default, written into `env`: the children read the same."""
    env[name] = str(read(name, env))
    return env[name]


def post(url: str, body: dict, api_key: str | None) -> None:
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120):
            pass
    except OSError as exc:
        log(f"could not load demo model {body['model_dir']}: {exc}")


def demo_or_given_models(env: dict[str, str]) -> dict[str, float] | None:
    """With neither BASE_MODEL_DIR nor MODELS_ROOT set, prepare the demo and point `env` at it: its models
    and their held-out accuracies. None (after saying why) when only one of the two is set."""
    demo: dict[str, float] = {}
    if not env.get("BASE_MODEL_DIR") and not env.get("MODELS_ROOT"):
        sys.path.insert(0, str(REPO / "scripts" / "demo"))
        from prepare import prepare

        base, models, demo = prepare(REPO / "var" / "demo")
        env.update(BASE_MODEL_DIR=str(base), MODELS_ROOT=str(models))
    missing = [name for name in ("BASE_MODEL_DIR", "MODELS_ROOT") if not env.get(name)]
    if missing:
        log(f"set {' and '.join(missing)} too, or neither for the demo (see README)")
        return None
    return demo


def supervision_settings(env: dict[str, str]) -> SupervisionSettings:
    try:
        return SupervisionSettings.from_environment(env)
    except ValueError as exc:
        sys.exit(f"{Path(sys.argv[0]).stem}: {exc}")


def triton_child(name: str, run_dir: Path, env: dict[str, str], http_port: str | int) -> Child:
    """tritonserver through scripts/run_triton.py, in `run_dir`, health-checked on its HTTP port."""
    command = [
        sys.executable,
        str(REPO / "scripts" / "run_triton.py"),
        f"--run-dir={run_dir}",
        f"--runtime-dir={REPO / 'var' / 'triton-runtime'}",
    ]
    return Child(name, command, env, REPO, health_url=f"http://127.0.0.1:{http_port}/v2/health/ready")


def shim_child(env: dict[str, str]) -> Child:
    """The REST shim: gunicorn with its configuration (api_shim/gunicorn.conf.py)."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    command = [gunicorn, "-c", str(REPO / "api_shim" / "gunicorn.conf.py"), "api_shim.wsgi:app"]
    return Child("gunicorn", command, env, REPO)


def main() -> int:
    env = dict(os.environ)
    if not env.get("BASE_MODEL_DIR") and not env.get("MODELS_ROOT"):
        env.setdefault("STATE_DIR", str(REPO / "var" / "demo" / "state"))
    demo = demo_or_given_models(env)
    if demo is None:
        return 2
    state_dir = Path(env.setdefault("STATE_DIR", str(REPO / "var" / "state")))  # not the image's /var/lib/...
    try:
        run_dir = REPO / read("RUN_DIR", env)
        api_port, http_port, metrics_port = (
            settled(env, name) for name in ("API_PORT", "TRITON_HTTP_PORT", "TRITON_METRICS_PORT")
        )
    except ValueError as exc:
        sys.exit(f"serve: {exc}")
    run_dir.mkdir(parents=True, exist_ok=True)
    env["CONTROL_TOKEN"] = env.get("CONTROL_TOKEN") or control_token(state_dir)
    env.setdefault("TRITON_URL", f"127.0.0.1:{http_port}")
    env.setdefault("TRITON_METRICS_URL", f"http://127.0.0.1:{metrics_port}/metrics")
    settings = supervision_settings(env)
    state_file = run_dir / "backend.json"
    env["BACKEND_STATE_FILE"] = str(state_file)

    triton = triton_child("tritonserver", run_dir / "triton", env, http_port)
    shim = shim_child(env)
    base = f"http://localhost:{api_port}/api/v1"

    def on_ready() -> None:
        for task in demo:
            post(f"{base}/inference/models/load", {"model_dir": task, "max_length": 64}, env.get("API_KEY"))
        print(f"\nserve: ready at {base}", flush=True)
        for task, accuracy in demo.items():
            print(f"  demo model {task}: held-out accuracy {accuracy:.1%}", flush=True)
        if demo:
            example = json.dumps(
                {"model_id": "support_intent", "texts": ["Where is my package?", "I want my money back"]}
            )
            print(
                f"  curl -s -X POST {base}/inference/predict -H 'Content-Type: application/json' -d '{example}'",
                flush=True,
            )
        print(f"  curl -s {base}/inference/status\n", flush=True)

    supervisor = Supervisor(triton, shim, settings, state_file, on_ready, shim_ready_url=f"{base}/health/ready")
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    return supervisor.run()


if __name__ == "__main__":
    raise SystemExit(main())
