"""Every setting the service reads, defined once: its environment name, type, default, unit, one line of
documentation, and the processes that read it. The settings dataclasses, gunicorn.conf.py, the launchers and
docs/settings.md (python -m lora_core.settings_doc) all take them from here; tests/lora_core/test_settings_registry.py
checks that the code reads no other name, and that .env and the compose files agree with these defaults.

Standard library only: every process imports it, the Triton image's and the API image's alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Who reads a setting; docs/settings.md groups the settings by their first reader.
MODEL = "model"
BEFORE_IMPORT = "model, before any import"
SHIM = "shim"
GUNICORN = "gunicorn"
RUN_TRITON = "run_triton"
SERVE = "make serve"
CLUSTER = "make cluster"
AGENT = "node agent"
MIGRATION = "etcd import"
COMPOSE = "docker-compose"

READERS: dict[str, str] = {
    MODEL: "The model: lora_classifier inside tritonserver (model.py, adapter_manager/settings.py)",
    BEFORE_IMPORT: "The model, before any import (model.py's first lines)",
    SHIM: "The REST shim's workers (api_shim/settings.py)",
    GUNICORN: "The shim's master (api_shim/gunicorn.conf.py)",
    RUN_TRITON: "Triton's launcher (scripts/run_triton.py): the Triton image's entry point, and make serve's Triton",
    SERVE: "make serve and its supervisor (scripts/serve.py, scripts/supervisor.py)",
    CLUSTER: "make cluster (scripts/cluster.py)",
    AGENT: "The node agent (python -m lora_cluster.node_agent)",
    MIGRATION: "The import of one node's desired state into etcd (python -m adapter_manager.etcd_state)",
    COMPOSE: "docker-compose itself, on the host, from .env or the shell",
}
KINDS: dict[str, type] = {"text": str, "integer": int, "number": float, "path": Path}


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # a key of KINDS
    default: str  # as written in the environment; "" is empty (the help says what empty means)
    unit: str  # "" when the value has none
    help: str  # one line
    readers: tuple[str, ...]
    # Where the images or compose set another value than the default: (that value, why).
    container: tuple[str, str] | None = None


def _s(
    name: str, kind: str, default: str, unit: str, help: str, *readers: str, container: tuple[str, str] | None = None
) -> Setting:
    return Setting(name, kind, default, unit, help, readers, container)


_ETCD = (MODEL, SHIM, AGENT, MIGRATION)

SETTINGS: tuple[Setting, ...] = (
    # ------------------------------------------------------------------------------ the engine (model.py)
    _s("BASE_MODEL_DIR", "path", "/models/base", "", "Local Hugging Face encoder directory (config, weights, "
       "tokenizer). Neither this nor MODELS_ROOT set: make serve and make cluster serve the built-in demo.",
       MODEL, SERVE, CLUSTER),
    _s("MODELS_ROOT", "path", "/models/outputs", "", "Directory holding the training outputs; every model_dir is "
       "inside it.", MODEL, SERVE, CLUSTER),
    _s("STATE_DIR", "path", "/var/lib/lora-classifier", "", "Where the desired-state manifest of loaded adapters "
       "is kept (make serve: var/state, or var/demo/state for the demo; make cluster: var/cluster).",
       MODEL, SERVE, CLUSTER),
    _s("MAX_ADAPTERS", "integer", "1024", "adapters", "Most adapters resident at once (>= 1).", MODEL),
    _s("DEVICE", "text", "auto", "", "auto | cpu | cuda | cuda:N; auto picks cuda when a GPU is visible.", MODEL),
    _s("DTYPE", "text", "auto", "", "auto | float32 | float16 | bfloat16; auto is float32 on CPU and float16 on "
       "CUDA, whose probabilities differ from float32's by at most 1.25e-2 (H200, at ebb3565; top-1 unchanged).",
       MODEL),
    _s("TORCH_THREADS", "integer", "0", "threads", "Intra-op threads per CPU model instance; 0 shares the cores "
       "among the instances.", MODEL),
    _s("MAX_TEXT_CHARS", "integer", "100000", "characters", "Longest text accepted (longer ones are "
       "payload_too_large).", MODEL, SHIM),
    _s("MEMORY_TRIM_SECONDS", "integer", "10", "s", "Every this many seconds, return freed heap memory to the OS "
       "(glibc); 0: never.", MODEL),
    _s("MODELS_INDEX_SECONDS", "number", "5", "s", "Every this many seconds, look for training outputs added or "
       "removed under MODELS_ROOT (> 0).", MODEL),
    _s("MAX_BATCH_TOKENS", "integer", "16384", "tokens", "Most padded tokens in one encoder forward; a batch is cut "
       "into runs of similar length within it (>= 1).", MODEL),
    _s("CONTROL_TOKEN", "text", "", "", "The secret the shim and Triton share: control operations (load, unload, "
       "list, status) and every Triton API but inference, health and metadata need it; empty: all control is "
       "refused (make serve and make cluster make one in STATE_DIR; docker-compose requires it).",
       MODEL, SHIM, RUN_TRITON, SERVE, CLUSTER),
    # ------------------------------------------------------------- read before any import (model.py's first lines)
    _s("LORA_CLASSIFIER_PYTHONPATH", "text", "", "", "Extra import paths for model.py (the backend stub ignores "
       "PYTHONPATH); run_triton.py puts the repository and the venv's packages after the operator's own.",
       BEFORE_IMPORT, RUN_TRITON),
    _s("OMP_WAIT_POLICY", "text", "PASSIVE", "", "OpenMP threads sleep between forwards rather than spin (model.py "
       "sets it when unset, before torch is imported).", BEFORE_IMPORT),
    _s("TOKENIZERS_PARALLELISM", "text", "false", "", "The tokenizers library's own threads (model.py sets it when "
       "unset: the instances already use every core).", BEFORE_IMPORT),
    # ------------------------------------------------------------------------------------ etcd (several nodes)
    _s("ETCD_ENDPOINTS", "text", "", "", "Comma-separated etcd members (http[s]://host:2379,...); empty: no etcd "
       "(one node, desired state in STATE_DIR). The cluster layer is imported only when it is set.", *_ETCD),
    _s("ETCD_USER", "text", "", "", "This process's etcd user; empty: no authentication.", *_ETCD),
    _s("ETCD_PASSWORD", "text", "", "", "That user's password (never on a command line).", *_ETCD),
    _s("ETCD_PREFIX", "text", "/lora-classifier/", "", "Prefix of every key the service keeps in etcd.", *_ETCD),
    _s("ETCD_TIMEOUT_S", "number", "2", "s", "Longest wait for one etcd member (> 0).", *_ETCD),
    _s("ETCD_CA_CERT", "text", "", "", "PEM file of the CA that signed the members' certificates (https://); "
       "empty: the system's CAs.", *_ETCD),
    _s("ETCD_CERT", "text", "", "", "PEM file of this process's client certificate, for https:// members.", *_ETCD),
    _s("ETCD_KEY", "text", "", "", "PEM file of that certificate's private key.", *_ETCD),
    # ----------------------------------------------------------------------------------------- the REST shim
    _s("TRITON_URL", "text", "localhost:8010", "", "Triton's HTTP endpoint (host:port).", SHIM,
       container=("triton:8000", "the Triton container's own port, on the compose network")),
    _s("TRITON_CONTROL_URL", "text", "", "", "Where control operations go (host:port); empty: TRITON_URL. Behind "
       "HAProxy, its control frontend, which never retries a request that reached a node.", SHIM),
    _s("TRITON_METRICS_URL", "text", "http://localhost:8012/metrics", "", "Triton's Prometheus metrics endpoint.",
       SHIM, container=("http://triton:8002/metrics", "the Triton container's own metrics port")),
    _s("TRITON_TIMEOUT_S", "integer", "120", "s", "Longest wait for one Triton call (>= 1).", SHIM),
    _s("TRITON_STALL_S", "integer", "5", "s", "A Triton call in flight this long makes new calls first check that "
       "Triton answers its health endpoint (>= 1).", SHIM),
    _s("BACKEND_STATE_FILE", "text", "", "", "Where make serve's supervisor reports Triton's state, so that status "
       "says `starting` while Triton (re)starts; make serve sets it.", SHIM),
    _s("API_KEY", "text", "", "", "When set, every /inference endpoint needs it (X-API-Key or Authorization: "
       "Bearer); empty: no authentication.", SHIM, SERVE, CLUSTER),
    _s("MAX_TEXTS_PER_REQUEST", "integer", "1024", "texts", "Most texts in one predict request.", SHIM),
    _s("MAX_BODY_BYTES", "integer", "16777216", "bytes", "Largest request body accepted.", SHIM),
    _s("MAX_TOP_N", "integer", "1000", "labels", "Largest top_n accepted.", SHIM),
    _s("MAX_BATCH_SIZE", "integer", "64", "texts", "Largest batch_size accepted (Triton's max_batch_size).", SHIM),
    _s("PREDICT_CONCURRENCY", "integer", "4", "requests", "Chunks of one predict request in flight at once.", SHIM),
    _s("COALESCE_IN_FLIGHT", "integer", "2", "requests", "Triton requests each shim worker keeps in flight for "
       "one-chunk predicts; predicts that arrive meanwhile go together as the next one; 0: each goes alone.", SHIM),
    _s("KEEPALIVE_LINGER_MS", "integer", "30", "ms", "How long a gunicorn thread waits for a kept-alive "
       "connection's next request, while another thread is free, before handing it back to the poller; 0: at once.",
       SHIM),
    _s("PREDICT_RETRIES", "integer", "2", "retries", "Times a predict is sent again after Triton was unreachable or "
       "not ready (a predict is idempotent).", SHIM),
    _s("ADMISSION_MAX_WAIT_S", "number", "1", "s", "A predict that would wait longer than this behind the work in "
       "flight is refused at once with 429 overloaded and Retry-After; 0 admits everything.", SHIM),
    _s("NODE_STATUS_TIMEOUT_S", "number", "1", "s", "Longest wait for one node's answer in status; a slower node is "
       "`unreachable` (> 0).", SHIM),
    _s("PROMETHEUS_MULTIPROC_DIR", "text", "", "", "Where the workers write their metric samples (prometheus_client's "
       "multiprocess mode); empty: a fresh directory per shim, removed when it stops.", GUNICORN, SHIM),
    # -------------------------------------------------------------------------- gunicorn (the shim's master)
    _s("API_HOST", "text", "0.0.0.0", "", "Address the REST API listens on.", GUNICORN),
    _s("API_PORT", "integer", "8000", "", "Port of the REST API (docker-compose: the host port it is published on).",
       GUNICORN, SERVE, CLUSTER, COMPOSE,
       container=("8080", "the host port deploy/compose/gpu-node.yml publishes, since the node's Triton takes 8000")),
    _s("GUNICORN_WORKERS", "text", "auto", "processes", "Shim worker processes; auto: one per core, 2 to 8.",
       GUNICORN),
    _s("GUNICORN_THREADS", "integer", "64", "threads", "Threads per worker (a request mostly waits on Triton).",
       GUNICORN),
    _s("GUNICORN_BACKLOG", "integer", "2048", "connections", "Connections the listening socket queues.", GUNICORN),
    _s("GUNICORN_MAX_REQUESTS", "integer", "0", "requests", "A worker is replaced after this many; 0: never.",
       GUNICORN),
    _s("GUNICORN_MAX_REQUESTS_JITTER", "integer", "0", "requests", "Random extra on GUNICORN_MAX_REQUESTS, so that "
       "workers are not replaced together.", GUNICORN),
    _s("GUNICORN_TIMEOUT", "integer", "150", "s", "A worker silent this long is restarted; keep it above "
       "TRITON_TIMEOUT_S.", GUNICORN),
    _s("GUNICORN_KEEPALIVE", "integer", "5", "s", "How long an idle kept-alive connection stays open.", GUNICORN),
    _s("GUNICORN_CONTROL_SOCKET", "text", "", "", "Path of gunicorn's runtime control socket; empty: none (one "
       "fixed path per user would be shared by several shims).", GUNICORN),
    _s("GUNICORN_ACCESS_LOG", "text", "-", "", "Where the access log goes; -: standard output.", GUNICORN),
    _s("LOG_LEVEL", "text", "info", "", "gunicorn's log level.", GUNICORN),
    _s("DRAIN_TIMEOUT_S", "integer", "30", "s", "On SIGTERM or Ctrl-C, new connections are refused at once and "
       "requests in flight get this long to finish (docker-compose's stop_grace_period, 40 s, must exceed it).",
       GUNICORN, SERVE, CLUSTER),
    # ------------------------------------------------------------------------- Triton's launcher (run_triton)
    _s("TRITON_HTTP_PORT", "integer", "8010", "", "Triton's HTTP port.", RUN_TRITON, SERVE, COMPOSE,
       container=("8000", "Triton's own, inside the container (deploy/compose/gpu-node.yml publishes it on the "
       "host under this name, default 8000)")),
    _s("TRITON_GRPC_PORT", "integer", "8011", "", "Triton's gRPC port.", RUN_TRITON, SERVE,
       container=("8001", "Triton's own, inside the container")),
    _s("TRITON_METRICS_PORT", "integer", "8012", "", "Triton's Prometheus metrics port.", RUN_TRITON, SERVE,
       COMPOSE, container=("8002", "Triton's own, inside the container (gpu-node.yml publishes it under this name, "
       "default 8002)")),
    _s("TRITON_BIND_ADDRESS", "text", "127.0.0.1", "", "Address of Triton's three ports; 0.0.0.0 opens them to "
       "other hosts.", RUN_TRITON, SERVE,
       container=("0.0.0.0", "the compose network reaches it; no port is published")),
    _s("TRITON_INSTANCES", "text", "auto", "instances", "Model instances per device; auto: one per GPU, or on CPU "
       "one per core, at most 4.", RUN_TRITON, SERVE, CLUSTER, container=("1", "per GPU (the image's CMD)")),
    _s("TRITON_KIND", "text", "cpu", "", "cpu | gpu: where the model instances run.", RUN_TRITON, SERVE,
       container=("gpu", "the image's CMD")),
    _s("TRITONSERVER_ROOT", "text", "", "", "An installed Triton (bin/, backends/); empty: the one from the "
       "nvidia-pytriton wheel, unpacked under var/triton-runtime.", RUN_TRITON,
       container=("/opt/tritonserver", "the NGC image's")),
    _s("TRITON_MAX_QUEUE_SIZE", "integer", "256", "requests", "Predicts queued in Triton before it refuses more "
       "(429 overloaded through the shim); 0: unbounded.", RUN_TRITON, SERVE),
    _s("TRITON_HANG_TIMEOUT_S", "number", "30", "s", "Seconds Triton's health endpoint may stay silent before it "
       "counts as hung and is restarted (make serve) or ends its container (run_triton.py --watchdog).",
       RUN_TRITON, SERVE, CLUSTER),
    # --------------------------------------------------------------------------- supervision (make serve)
    _s("TRITON_START_TIMEOUT_S", "number", "600", "s", "Longest wait for a starting Triton to become ready.",
       SERVE, CLUSTER),
    _s("TRITON_GIVE_UP_AFTER", "integer", "5", "starts", "Failed starts in a row after which make serve ends with "
       "the cause and a non-zero exit.", SERVE, CLUSTER),
    _s("RUN_DIR", "path", "var/run", "", "Where make serve keeps Triton's model repository copy, logs and the "
       "backend state file (relative: to the checkout).", SERVE),
    # ----------------------------------------------------------------------------- several nodes on one machine
    _s("NODES", "integer", "3", "nodes", "How many tritonservers make cluster runs (1 to 16).", CLUSTER),
    _s("CLUSTER_ETCD_PORT", "integer", "23790", "", "First port of make cluster's etcd: client and peer port of each "
       "of the 3 members in turn.", CLUSTER),
    _s("CLUSTER_TRITON_PORT", "integer", "8100", "", "First port of make cluster's nodes: http, grpc, metrics of node "
       "i at +10i.", CLUSTER),
    _s("CLUSTER_BALANCER_PORT", "integer", "9000", "", "HAProxy's data frontend in make cluster; its control "
       "frontend is the next port.", CLUSTER),
    # --------------------------------------------------------------------------------------- the node agent
    _s("NODE_ID", "text", "", "", "This node's id in the registry; empty: the host name.", AGENT),
    _s("NODE_TRITON_URL", "text", "", "", "Triton's HTTP host:port as the shims reach it (advertised; required).",
       AGENT),
    _s("NODE_METRICS_URL", "text", "", "", "Triton's metrics URL as the shims reach it (advertised; required).",
       AGENT),
    _s("NODE_LEASE_TTL_S", "integer", "10", "s", "The registry entry lapses this long after the agent stops.",
       AGENT),
    _s("NODE_REPORT_S", "number", "2", "s", "How often the lease is renewed and the entry checked (under half of "
       "NODE_LEASE_TTL_S).", AGENT),
    # ----------------------------------------------------------- docker-compose's own (host side, from .env)
    _s("BASE_MODEL_HOST_DIR", "path", "./var/models/base", "", "Host folder of the base encoder, mounted read-only "
       "at BASE_MODEL_DIR (/models/base).", COMPOSE),
    _s("MODELS_ROOT_HOST_DIR", "path", "./var/models/outputs", "", "Host folder of the training outputs, mounted "
       "read-only at MODELS_ROOT (/models/outputs).", COMPOSE),
    _s("NODE_ADDRESS", "text", "", "", "gpu-node.yml: this host's address, as the balancer and other shims reach "
       "it (required).", COMPOSE),
    _s("BALANCER", "text", "", "", "gpu-node.yml: the control plane's host, where HAProxy listens on 9000 (data) "
       "and 9001 (control) (required).", COMPOSE),
    _s("CONTROL_PLANE_HOST", "text", "", "", "control-plane.yml: this host's address, advertised by the etcd "
       "members (required).", COMPOSE),
    _s("ETCD_NODE_USER", "text", "lora-node", "", "gpu-node.yml: the etcd user of Triton and its agent "
       "(ETCD_USER there).", COMPOSE),
    _s("ETCD_NODE_PASSWORD", "text", "", "", "gpu-node.yml: that user's password (required).", COMPOSE),
    _s("ETCD_SHIM_USER", "text", "lora-shim", "", "gpu-node.yml: the shim's etcd user (read access).", COMPOSE),
    _s("ETCD_SHIM_PASSWORD", "text", "", "", "gpu-node.yml: that user's password (required).", COMPOSE),
)  # fmt: skip

REGISTRY: dict[str, Setting] = {s.name: s for s in SETTINGS}

# Names the code reads that are no settings: other software's, only logged or extended, and the shim's own marker.
NOT_SETTINGS = {
    "LORA_SHIM_OWNS_METRICS_DIR": "set by the shim's master on the metrics directory it made, to remove it on exit",
    "LANG": "logged by model.py when the file-system encoding is not UTF-8",
    "LC_ALL": "logged by model.py when the file-system encoding is not UTF-8",
    "LD_LIBRARY_PATH": "extended by run_triton.py with the wheel's libraries and libpython's directory",
    "HF_HUB_OFFLINE": "the Hugging Face libraries': set to 1 when unset (run_triton.py, the demo): there is no hub",
    "HF_HUB_DISABLE_PROGRESS_BARS": "the Hugging Face libraries': set to 1 when unset, for quiet logs",
    "TRANSFORMERS_VERBOSITY": "transformers': set to error when unset, for quiet logs",
}
