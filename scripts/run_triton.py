"""Run the real tritonserver from the nvidia-pytriton wheel against model_repository/, without Docker.

    .venv/bin/python scripts/run_triton.py [--http-port 8010] [--instances 2] [--kind cpu] [--run-dir DIR]

Steps (see docs/ARCHITECTURE notes): the wheel's tritonserver tree is copied somewhere writable, the
backend stub for this Python goes into backends/python, the wheel's bundled libraries go on
LD_LIBRARY_PATH, and the model sees this interpreter's packages through LORA_CLASSIFIER_PYTHONPATH
(the stub ignores PYTHONPATH). Run it with the .venv made from /usr/bin/python3: the stub links the
system libpython, and a venv from another build fails inside it. The model repository is copied to the
run directory with its instance_group set from --instances/--kind; settings come from the environment
(BASE_MODEL_DIR, MODELS_ROOT, STATE_DIR, ...). Only the standard library is used here.

In the Triton container (scripts/docker/triton.Dockerfile) the same script runs the image's own server:
`--tritonserver-root /opt/tritonserver` skips the wheel and uses that tree's binary and backends.

Nothing behind the shim's API key is reachable around it: the ports listen on TRITON_BIND_ADDRESS
(127.0.0.1 unless a setting opens them), and every API but inference, health and metadata answers only
requests carrying CONTROL_TOKEN in the `lora-control-token` header (the model checks the same secret on
every control operation). Without CONTROL_TOKEN those APIs are closed to everyone.

`--instances auto` (the default) picks the instance count from the cores: see `auto_instances`.

`--watchdog` (the Triton image uses it) keeps tritonserver as a child instead of becoming it, and ends both
once tritonserver stops answering its health endpoint for TRITON_HANG_TIMEOUT_S: a container's restart
policy acts on exits only, so a hung server must exit to be replaced. `make serve` supervises on its own.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import secrets
import shutil
import signal
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lora_core.control_token import restricted_api_flags  # torch-free
from lora_core.settings import read

MODEL_NAME = "lora_classifier"
# Measured on 2 cores (docs/benchmarks.md, "Defaults"): 2 instances of 1 thread served 1-text traffic
# 1.4x faster than 1 instance of 2 threads, since one instance tokenizes and runs Python while the other
# computes. Past 4, every instance costs a copy of the base model for little gain.
MAX_AUTO_CPU_INSTANCES = 4


def auto_instances(kind: str, cores: int | None = None) -> int:
    """Instances per device: one per core up to MAX_AUTO_CPU_INSTANCES on CPU (TORCH_THREADS=0 then shares
    the cores among them), one per GPU on GPU."""
    if kind == "gpu":
        return 1
    return max(1, min(cores or os.cpu_count() or 1, MAX_AUTO_CPU_INSTANCES))


def instance_count(value: str, kind: str) -> int:
    """`--instances`: a positive count, or `auto`."""
    if value == "auto":
        return auto_instances(kind)
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"TRITON_INSTANCES must be a positive integer or auto, got {value!r}")
    return int(value)


def queue_size(value: str) -> int:
    """`--max-queue-size`: a count of requests, 0 for unbounded."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"TRITON_MAX_QUEUE_SIZE must be a non-negative integer, got {value!r}")
    return int(value)


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def wheel_site() -> Path:
    """The folder holding the nvidia-pytriton wheel's `pytriton/` and `nvidia_pytriton.libs/`: this
    interpreter's site-packages, or wherever else the import path finds it (`pip install --target`)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).parent
    return site_packages()


def wheel_root() -> Path:
    root = wheel_site() / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        sys.exit(f"tritonserver not found under {root}: install nvidia-pytriton==0.7.0 (make venv)")
    return root


def prepare_runtime(runtime: Path) -> Path:
    """A writable copy of the wheel's tritonserver tree with this Python's backend stub in place."""
    source = wheel_root()
    stamp = runtime / ".source"
    if not (stamp.exists() and stamp.read_text() == str(source)):
        if runtime.exists():
            shutil.rmtree(runtime)
        shutil.copytree(source, runtime, symlinks=True)
        stamp.write_text(str(source))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = runtime / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = runtime / "backends" / "python" / "triton_python_backend_stub"
    if not target.exists():
        shutil.copy2(stub, target)
    return runtime


def prepare_repository(
    source: Path, run_dir: Path, instances: int, kind: str, max_queue_size: int | None = None
) -> Path:
    """Copy the model repository with the instance_group block set for this run, and the predicts' queue
    bound when `max_queue_size` is given.

    KIND_GPU without a `gpus` list places `instances` instances on every visible GPU.
    """
    repository = run_dir / "model_repository"
    if repository.exists():
        shutil.rmtree(repository)
    shutil.copytree(source, repository, ignore=shutil.ignore_patterns("__pycache__"))
    config = repository / MODEL_NAME / "config.pbtxt"
    group = f"instance_group [ {{ count: {instances}, kind: KIND_{kind.upper()} }} ]"
    text, replaced = re.subn(r"^instance_group\s*\[.*?\]", group, config.read_text(), flags=re.M | re.S)
    if replaced != 1:
        sys.exit(f"{config}: expected exactly one instance_group block")
    if max_queue_size is not None:
        policy = f"default_queue_policy {{ max_queue_size: {max_queue_size} }}"
        text, replaced = re.subn(r"default_queue_policy\s*\{[^}]*\}", policy, text)
        if replaced != 1:
            sys.exit(f"{config}: expected exactly one default_queue_policy block")
    config.write_text(text)
    return repository


def python_library_dir() -> str:
    """This Python's LIBDIR when its shared libpython (which the stub links) lives there, outside the system's
    library folders: a Python installed under /opt, say. Empty otherwise."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if not libdir or libdir.startswith(("/usr/lib", "/lib")) or not (Path(libdir) / soname).is_file():
        return ""
    return libdir


def server_environment(from_wheel: bool, stub_site: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    libraries = [str(wheel_site() / "nvidia_pytriton.libs")] if from_wheel else []
    libraries += [env.get("LD_LIBRARY_PATH", ""), python_library_dir()]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libraries if p)
    # An operator's own entries (LORA_CLASSIFIER_PYTHONPATH) come first.
    paths = [env.get("LORA_CLASSIFIER_PYTHONPATH", ""), str(REPO), str(stub_site or site_packages())]
    env["LORA_CLASSIFIER_PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return env


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Each default is its setting (lora_core/settings_registry.py, docs/settings.md); a flag overrides it.
    parser.add_argument("--http-port", type=int, default=read("TRITON_HTTP_PORT"))
    parser.add_argument("--grpc-port", type=int, default=read("TRITON_GRPC_PORT"))
    parser.add_argument("--metrics-port", type=int, default=read("TRITON_METRICS_PORT"))
    parser.add_argument(
        "--instances",
        default=read("TRITON_INSTANCES"),
        help="instances per device, or auto (the default)",
    )
    parser.add_argument("--kind", choices=("cpu", "gpu"), default=read("TRITON_KIND"))
    parser.add_argument(
        "--bind-address",
        default=read("TRITON_BIND_ADDRESS"),
        help="address of the HTTP, gRPC and metrics ports; 0.0.0.0 opens them to other hosts",
    )
    parser.add_argument("--run-dir", type=Path, default=REPO / "var" / "run" / "triton")
    parser.add_argument("--runtime-dir", type=Path, default=REPO / "var" / "triton-runtime")
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    parser.add_argument(
        "--tritonserver-root",
        type=Path,
        default=read("TRITONSERVER_ROOT") or None,
        help="an installed Triton (bin/, backends/), e.g. /opt/tritonserver; default: the pip wheel",
    )
    parser.add_argument(
        "--stub-site",
        type=Path,
        default=None,
        help="the packages the model imports (default: this interpreter's site-packages)",
    )
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument(
        "--watchdog",
        action="store_true",
        help="stay tritonserver's parent and exit once it hangs (TRITON_HANG_TIMEOUT_S)",
    )
    parser.add_argument(
        "--max-queue-size",
        type=queue_size,
        default=str(read("TRITON_MAX_QUEUE_SIZE")),
        help="predicts queued in Triton before it refuses more (0: unbounded)",
    )
    parser.set_defaults(hang_timeout_s=read("TRITON_HANG_TIMEOUT_S"))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = arguments()
    except ValueError as exc:  # a setting that is not of its type, named in the message
        sys.exit(f"run_triton: {exc}")
    args, extra = parser.parse_known_args(argv)

    try:
        instances = instance_count(args.instances, args.kind)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    token = read("CONTROL_TOKEN")
    if not token:
        print(
            "run_triton: CONTROL_TOKEN is not set: control operations and the restricted APIs are closed to everyone",
            file=sys.stderr,
            flush=True,
        )
    runtime = args.tritonserver_root or prepare_runtime(args.runtime_dir)
    repository = prepare_repository(args.model_repository, args.run_dir, instances, args.kind, args.max_queue_size)
    restricted = restricted_api_flags(token or secrets.token_hex(32))  # no token: a secret nobody holds
    command = [
        str(runtime / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={runtime / 'backends'}",
        f"--http-address={args.bind_address}",
        f"--grpc-address={args.bind_address}",
        f"--metrics-address={args.bind_address}",
        f"--http-port={args.http_port}",
        f"--grpc-port={args.grpc_port}",
        f"--metrics-port={args.metrics_port}",
        *restricted,
        "--allow-metrics=true",
        "--allow-cpu-metrics=true",
        f"--allow-gpu-metrics={'true' if args.kind == 'gpu' else 'false'}",
        "--metrics-interval-ms=1000",
        # Queue and compute time quantiles (nv_inference_queue_summary_us{quantile=...}) for the alerts in
        # deploy/monitoring/alerts.yml; the counters alone give averages only.
        "--metrics-config=summary_latencies=true",
        "--exit-timeout-secs=10",
        f"--log-verbose={args.log_verbose}",
        *extra,
    ]
    shown = [c for c in command if c not in restricted] + ["--http-restricted-api=... --grpc-restricted-protocol=..."]
    print(" ".join(shown), f"({instances} {args.kind} instance(s))", flush=True)
    env = server_environment(from_wheel=args.tritonserver_root is None, stub_site=args.stub_site)
    if args.watchdog:
        local = "127.0.0.1" if args.bind_address in ("0.0.0.0", "::") else args.bind_address
        return watch(
            command,
            env,
            f"http://{local}:{args.http_port}/v2/health/ready",
            args.hang_timeout_s,
        )
    os.execve(command[0], command, env)
    return 0


def watch(command: list[str], env: dict[str, str], health_url: str, hang_timeout_s: float) -> int:
    """Run tritonserver as a child until it exits, hangs (exit 1) or this process is asked to stop (exit 0)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from supervisor import POLL_S, Child, StopFlag, SupervisionSettings, log

    settings = SupervisionSettings(hang_timeout_s=hang_timeout_s)
    child = Child("tritonserver", command, env, REPO, health_url=health_url)
    stop = StopFlag()  # set from the signal handlers: no lock there
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.set(number))
    child.start()
    while not stop.wait(POLL_S):
        if not child.running():
            code = child.process.returncode
            child.kill()  # its backend stubs and their shared memory
            return code if code >= 0 else 128 - code
        now = time.monotonic()
        child.check_health(now)
        problem = child.health_problem(now, settings)
        if problem is not None:
            log(f"{problem}; killing it so that it is replaced")
            child.kill()
            return 1
    child.end(settings.triton_exit_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
