"""Every Prometheus metric name the project exports or reads, defined once.

Producers (model.py, api_shim/observability.py) and readers (the shim's status, the node agent, bench, tests)
import these. The alert rules in deploy/monitoring cannot: tests check that every name they use is one of these
(tests/monitoring/test_metric_names.py) and that these are what the services really expose
(tests/api_shim/test_alert_metric_names.py).

It imports nothing: the Triton stub, the shim, the node agent and the tests all import it.
A histogram's name is its base name; its samples are `<name>_bucket`, `_sum` and `_count`.
"""

# The model's own, registered by model.py with tritonserver and exported on Triton's metrics port.
LORA_REQUESTS_TOTAL = "lora_requests_total"  # counter: requests answered, by model_id and (model) instance
LORA_TEXTS_TOTAL = "lora_texts_total"  # counter: texts classified, by model_id and instance
LORA_FAILURES_TOTAL = "lora_failures_total"  # counter: requests that failed, by model_id and instance
LORA_LOAD_SECONDS = "lora_load_seconds"  # gauge: duration of each model_id's last load, by instance
LORA_LOAD_FAILURES_TOTAL = "lora_load_failures_total"  # counter: failed loads, by instance and error code
LORA_DESIRED_STATE_GENERATION = "lora_desired_state_generation"  # gauge: desired-state revision applied, by instance

# The shim's, served at its GET /metrics by api_shim/observability.py (summed over gunicorn's workers).
LORA_API_REQUESTS_TOTAL = "lora_api_requests_total"  # counter: HTTP requests answered, by endpoint and status
LORA_API_REQUEST_SECONDS = "lora_api_request_seconds"  # histogram: request to response, by endpoint
LORA_API_REQUESTS_IN_FLIGHT = "lora_api_requests_in_flight"  # gauge: requests being answered now
LORA_API_REFUSAL_SECONDS = "lora_api_refusal_seconds"  # histogram: overload refusals, arrival to 429 written
LORA_API_BACKEND_READY = "lora_api_backend_ready"  # gauge: 1 when the shim sees Triton's model ready
LORA_API_ADMISSION_WAIT_SECONDS = "lora_api_admission_wait_seconds"  # gauge: measured wait before a batch

# Triton's own, which we read (the shim's status, the node agent, the alerts, bench, tests).
NV_CPU_MEMORY_TOTAL_BYTES = "nv_cpu_memory_total_bytes"  # gauge: host RAM (--allow-cpu-metrics)
NV_CPU_MEMORY_USED_BYTES = "nv_cpu_memory_used_bytes"  # gauge: host RAM in use (--allow-cpu-metrics)
NV_GPU_MEMORY_TOTAL_BYTES = "nv_gpu_memory_total_bytes"  # gauge: per GPU (gpu_uuid), GPU hosts only
NV_GPU_MEMORY_USED_BYTES = "nv_gpu_memory_used_bytes"  # gauge: per GPU (gpu_uuid), GPU hosts only
NV_INFERENCE_PENDING_REQUEST_COUNT = "nv_inference_pending_request_count"  # gauge: requests queued, by model

# etcd's own, which the alerts read (multi-node mode).
ETCD_SERVER_HAS_LEADER = "etcd_server_has_leader"  # gauge: 1 when the member sees a leader

# Who exports which: the alert test looks for each group in that exporter's scrape.
MODEL_METRICS = frozenset(
    {
        LORA_REQUESTS_TOTAL,
        LORA_TEXTS_TOTAL,
        LORA_FAILURES_TOTAL,
        LORA_LOAD_SECONDS,
        LORA_LOAD_FAILURES_TOTAL,
        LORA_DESIRED_STATE_GENERATION,
    }
)
SHIM_METRICS = frozenset(
    {
        LORA_API_REQUESTS_TOTAL,
        LORA_API_REQUEST_SECONDS,
        LORA_API_REQUESTS_IN_FLIGHT,
        LORA_API_REFUSAL_SECONDS,
        LORA_API_BACKEND_READY,
        LORA_API_ADMISSION_WAIT_SECONDS,
    }
)
TRITON_METRICS = frozenset(
    {
        NV_CPU_MEMORY_TOTAL_BYTES,
        NV_CPU_MEMORY_USED_BYTES,
        NV_GPU_MEMORY_TOTAL_BYTES,
        NV_GPU_MEMORY_USED_BYTES,
        NV_INFERENCE_PENDING_REQUEST_COUNT,
    }
)
# Triton exports these with --allow-gpu-metrics on a host with a GPU only: a CPU host's scrape lacks them.
TRITON_GPU_ONLY = frozenset({NV_GPU_MEMORY_TOTAL_BYTES, NV_GPU_MEMORY_USED_BYTES})
ETCD_METRICS = frozenset({ETCD_SERVER_HAS_LEADER})
ALL = MODEL_METRICS | SHIM_METRICS | TRITON_METRICS | ETCD_METRICS
# The ones deploy/monitoring/alerts.yml uses: renaming one breaks an alert (a test holds the two equal).
ALERTED = frozenset(
    {
        LORA_LOAD_FAILURES_TOTAL,
        LORA_API_BACKEND_READY,
        LORA_API_ADMISSION_WAIT_SECONDS,
        NV_GPU_MEMORY_TOTAL_BYTES,
        NV_GPU_MEMORY_USED_BYTES,
        ETCD_SERVER_HAS_LEADER,
    }
)
