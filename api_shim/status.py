"""The status endpoint: one worker per Triton model instance, with memory figures from Triton's metrics.

Workers are named `cuda<gpu>-<k>` / `cpu-<k>` from the model's instance groups. A GPU worker's memory is
its GPU's (Triton labels GPU metrics by UUID; the model's `status` op maps GPU indexes to UUIDs); a CPU
worker's is the host's. The endpoint always answers: when Triton is unreachable it says `error`, or
`starting` while the supervisor (`make serve`) reports that it is bringing Triton back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_core.errors import AdapterError
from lora_core.metric_names import (
    LORA_FAILURES_TOTAL,
    LORA_REQUESTS_TOTAL,
    LORA_TEXTS_TOTAL,
    NV_CPU_MEMORY_TOTAL_BYTES,
    NV_CPU_MEMORY_USED_BYTES,
    NV_GPU_MEMORY_TOTAL_BYTES,
    NV_GPU_MEMORY_USED_BYTES,
    NV_INFERENCE_PENDING_REQUEST_COUNT,
)

from lora_core.prometheus import MetricsSnapshot, read_metrics

if TYPE_CHECKING:  # the gateway pulls in tritonclient and gevent; the GPU check reuses this module without them
    from .gateway import TritonGateway

log = logging.getLogger(__name__)
MB = 1024 * 1024


def worker_slots(config: dict[str, Any], gpu_count: int) -> list[tuple[str, str, int | None]]:
    """(worker_id, device, gpu index) for every instance the model config declares."""
    slots: list[tuple[str, str, int | None]] = []
    cpu_index = 0
    per_gpu: dict[int, int] = {}
    for group in config.get("instance_group", []):
        count = int(group.get("count", 1))
        if group.get("kind", "KIND_GPU") == "KIND_CPU":
            for _ in range(count):
                slots.append((f"cpu-{cpu_index}", "cpu", None))
                cpu_index += 1
            continue
        for gpu in group.get("gpus") or list(range(gpu_count)):
            for _ in range(count):
                k = per_gpu.get(gpu, 0)
                per_gpu[gpu] = k + 1
                slots.append((f"cuda{gpu}-{k}", f"cuda:{gpu}", gpu))
    return slots


def worker_entry(worker_id: str, device: str, total_bytes: float | None, used_bytes: float | None) -> dict[str, Any]:
    total = round((total_bytes or 0) / MB)
    used = round((used_bytes or 0) / MB)
    return {
        "worker_id": worker_id,
        "device": device,
        "total_memory_mb": total,
        "used_memory_mb": used,
        "free_memory_mb": max(0, total - used),
        "memory_usage_percent": round(100.0 * used / total, 1) if total else 0.0,
    }


def workers(config: dict[str, Any], metrics: MetricsSnapshot, gpu_uuids: dict[int, str]) -> list[dict[str, Any]]:
    gpu_total = metrics.by_label(NV_GPU_MEMORY_TOTAL_BYTES, "gpu_uuid")
    gpu_used = metrics.by_label(NV_GPU_MEMORY_USED_BYTES, "gpu_uuid")
    host_total = metrics.value(NV_CPU_MEMORY_TOTAL_BYTES)
    host_used = metrics.value(NV_CPU_MEMORY_USED_BYTES)
    entries = []
    for worker_id, device, gpu in worker_slots(config, gpu_count=len(gpu_uuids) or len(gpu_total)):
        if gpu is None:
            entries.append(worker_entry(worker_id, device, host_total, host_used))
        else:
            uuid = gpu_uuids.get(gpu, "")
            entries.append(worker_entry(worker_id, device, gpu_total.get(uuid), gpu_used.get(uuid)))
    return entries


TRAFFIC_METRICS = {"requests": LORA_REQUESTS_TOTAL, "texts": LORA_TEXTS_TOTAL, "failures": LORA_FAILURES_TOTAL}


def models_traffic(metrics: MetricsSnapshot) -> list[dict[str, Any]]:
    """Requests, texts and failed requests per model_id since each instance started, summed over the instances
    (the model's own counters in Triton's metrics); by model_id."""
    counted = [
        {"model_id": sample.labels["model_id"], field: int(sample.value)}
        for field, name in TRAFFIC_METRICS.items()
        for sample in metrics.samples
        if sample.name == name and "model_id" in sample.labels
    ]
    return merge_traffic([counted])


def merge_traffic(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Counts summed by model_id (over instances, or over nodes); a count a part lacks is 0."""
    totals: dict[str, dict[str, Any]] = {}
    for part in parts:
        for counts in part:
            model_id = counts["model_id"]
            entry = totals.setdefault(model_id, {"model_id": model_id, **dict.fromkeys(TRAFFIC_METRICS, 0)})
            for field in TRAFFIC_METRICS:
                entry[field] += counts.get(field, 0)
    return [totals[model_id] for model_id in sorted(totals)]


def supervisor_state(path: str) -> dict[str, Any] | None:
    """What the supervisor last wrote about Triton (scripts/supervisor.py), if it runs one."""
    if not path:
        return None
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _unreachable(answer: dict[str, Any], error: AdapterError, backend_state_file: str) -> dict[str, Any]:
    answer["message"] = error.message
    state = supervisor_state(backend_state_file)
    if state is not None and state.get("state") == "starting":
        answer["service_status"] = "starting"
        answer["message"] = f"Triton is starting ({state.get('detail', '')}): {error.message}"
    return answer


def empty_status() -> dict[str, Any]:
    """The status body before anything is known: what a client gets when nothing answers."""
    return {
        "service_status": "error",
        "workers": [],
        "total_workers": 0,
        "loaded_models_count": 0,
        "pending_requests": 0,
        "models_traffic": [],
    }


def service_status(
    gateway: TritonGateway, metrics_url: str, backend_state_file: str = "", metrics_timeout_s: float = 2.0
) -> dict[str, Any]:
    answer = empty_status()
    try:
        state = gateway.model_state()
    except AdapterError as exc:
        return _unreachable(answer, exc, backend_state_file)
    if state != "READY":
        answer["service_status"] = "starting" if state == "LOADING" else "error"
        answer["message"] = f"model {gateway.model} is {state}"
        return answer
    try:
        metrics = read_metrics(metrics_url, metrics_timeout_s)
        config = gateway.model_config()
        instance = gateway.control({"op": "status"})
    except AdapterError as exc:
        return _unreachable(answer, exc, backend_state_file)
    gpu_uuids = {int(g["index"]): g["uuid"] for g in instance.get("gpus", [])}
    answer["workers"] = workers(config, metrics, gpu_uuids)
    answer["total_workers"] = len(answer["workers"])
    answer["loaded_models_count"] = instance["loaded_models"]
    answer["pending_requests"] = int(metrics.value(NV_INFERENCE_PENDING_REQUEST_COUNT, model=gateway.model) or 0)
    answer["models_traffic"] = models_traffic(metrics)
    answer["service_status"] = "running"
    return answer
