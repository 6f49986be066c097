"""gunicorn settings for the REST shim; every value can be set from the environment.

gunicorn -c api_shim/gunicorn.conf.py api_shim.wsgi:app
"""

import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# --- Socket -----------------------------------------------------------------------------------
# The contract's base URL is http://<host>:8000/api/v1.
bind = [f"{os.environ.get('API_HOST', '0.0.0.0')}:{_int('API_PORT', 8000)}"]
backlog = _int("GUNICORN_BACKLOG", 2048)

# --- Workers ----------------------------------------------------------------------------------
# Threaded workers: a request mostly waits on Triton, so threads overlap that waiting cheaply.
# The shim holds no state, so any worker and thread may answer any request.
# gthread, closing its listener when a graceful shutdown starts and timing the wait for a thread
# (api_shim/worker.py).
worker_class = "api_shim.worker.ShimWorker"
workers = _int("GUNICORN_WORKERS", 2)
threads = _int("GUNICORN_THREADS", 64)
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)  # 0: never recycle; set it to bound slow leaks
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 0)

# --- Timeouts ---------------------------------------------------------------------------------
# A worker silent for `timeout` seconds is restarted; keep it above TRITON_TIMEOUT_S.
timeout = _int("GUNICORN_TIMEOUT", 150)
# On SIGTERM, new connections are refused and requests in flight get this long to finish (DRAIN_TIMEOUT_S
# under `make serve`).
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)

# --- Request limits ---------------------------------------------------------------------------
# Bodies are bounded by MAX_BODY_BYTES in the app; these bound the request line and headers.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# --- Control socket ---------------------------------------------------------------------------
# gunicorn's runtime control socket defaults to one fixed path per user, which several shims on one
# host would share; it is off unless GUNICORN_CONTROL_SOCKET names a path.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket

# --- Logging ----------------------------------------------------------------------------------
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
