"""gunicorn settings for the REST shim; every value can be set from the environment (docs/settings.md).

gunicorn -c api_shim/gunicorn.conf.py api_shim.wsgi:app
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

# gunicorn reads this file before it puts its working directory on sys.path: lora_core is found beside api_shim/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lora_core.settings import read  # standard library only
from api_shim.access_log import ACCESS_LOG_FORMAT  # gunicorn's and the standard library's only


# One worker per core, up to MAX_AUTO_WORKERS: each worker is one Python process (one core's worth of the shim's
# per-request work), so a fixed 2 would cap a 16-core GPU node's shim at 2 cores. Past 8, each worker joins
# fewer concurrent predicts into one Triton request (api_shim/coalescer.py) for little more parallelism.
MAX_AUTO_WORKERS = 8


# --- Socket -----------------------------------------------------------------------------------
# The contract's base URL is http://<host>:8000/api/v1.
bind = [f"{read('API_HOST')}:{read('API_PORT')}"]
backlog = read("GUNICORN_BACKLOG")

# --- Workers ----------------------------------------------------------------------------------
# Threaded workers: a request mostly waits on Triton, so threads overlap that waiting cheaply.
# The shim holds no state, so any worker and thread may answer any request.
# gthread, closing its listener when a graceful shutdown starts and timing the wait for a thread
# (api_shim/worker.py).
worker_class = "api_shim.worker.ShimWorker"
_workers = read("GUNICORN_WORKERS")
workers = min(MAX_AUTO_WORKERS, max(2, len(os.sched_getaffinity(0)))) if _workers == "auto" else int(_workers)
threads = read("GUNICORN_THREADS")
max_requests = read("GUNICORN_MAX_REQUESTS")  # 0: never recycle; set it to bound slow leaks
max_requests_jitter = read("GUNICORN_MAX_REQUESTS_JITTER")

# --- Timeouts ---------------------------------------------------------------------------------
# A worker silent for `timeout` seconds is restarted; keep it above TRITON_TIMEOUT_S.
timeout = read("GUNICORN_TIMEOUT")
# On SIGTERM, new connections are refused and requests in flight get this long to finish.
graceful_timeout = read("DRAIN_TIMEOUT_S")
keepalive = read("GUNICORN_KEEPALIVE")

# --- Request limits ---------------------------------------------------------------------------
# Bodies are bounded by MAX_BODY_BYTES in the app; these bound the request line and headers.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# --- Control socket ---------------------------------------------------------------------------
# gunicorn's runtime control socket defaults to one fixed path per user, which several shims on one
# host would share; it is off unless GUNICORN_CONTROL_SOCKET names a path.
control_socket = read("GUNICORN_CONTROL_SOCKET")
control_socket_disable = not control_socket

# --- Logging ----------------------------------------------------------------------------------
accesslog = read("GUNICORN_ACCESS_LOG")
errorlog = "-"
loglevel = read("LOG_LEVEL")
access_log_format = ACCESS_LOG_FORMAT
logger_class = "api_shim.access_log.ShimLogger"  # the same line, without the atoms it does not use

# --- Metrics ----------------------------------------------------------------------------------
# prometheus_client's multiprocess mode (api_shim/observability.py): the workers write their samples under
# PROMETHEUS_MULTIPROC_DIR and a scrape sums them. Set up in the master before any worker starts: each shim
# gets a fresh directory of its own unless one is named; a named one is emptied, since samples left by an
# earlier run would be counted again.
_OWNED_DIR_MARKER = "LORA_SHIM_OWNS_METRICS_DIR"


def on_starting(server) -> None:
    # The node's load, shared by every worker (api_shim/node_load.py): made here, before any fork.
    from api_shim import node_load

    node_load.prepare()
    if not read("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lora-shim-metrics-")
        os.environ[_OWNED_DIR_MARKER] = "1"
    directory = Path(read("PROMETHEUS_MULTIPROC_DIR"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess  # imported once the directory is set

    from api_shim import node_load

    multiprocess.mark_process_dead(worker.pid)  # its in-flight gauge no longer counts
    load = node_load.prepared()
    if load is not None:
        load.release(worker.pid)  # nor its in-flight texts


def on_exit(server) -> None:
    if os.environ.get(_OWNED_DIR_MARKER) == "1":
        shutil.rmtree(read("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
