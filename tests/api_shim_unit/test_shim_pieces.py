"""The shim's pieces without Triton: settings, metrics parsing, worker naming, response shapes, the error
handler (through Flask's test client, with Triton absent), gunicorn's config, and no torch import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lora_core.errors import BackendUnavailable
from api_shim.app import create_app
from api_shim.backend_watch import BackendWatch
from api_shim.gateway import Prediction, TritonGateway
from lora_core.prometheus import MetricsSnapshot
from lora_core.metric_names import (
    LORA_TEXTS_TOTAL,
    NV_CPU_MEMORY_TOTAL_BYTES,
    NV_GPU_MEMORY_USED_BYTES,
    NV_INFERENCE_PENDING_REQUEST_COUNT,
)
from api_shim.responses import listing_body, predict_body
from api_shim.settings import ShimSettings
from api_shim.status import worker_slots, workers
from testkit.process_harness import free_port
from testkit.triton_harness import REPO

# Triton's exposition as it reads, kept verbatim: the assertions look its names up by the constants, so a
# misspelled constant fails here.
METRICS = """# HELP nv_cpu_memory_total_bytes CPU total memory (RAM), in bytes
nv_cpu_memory_total_bytes 25325268992
nv_cpu_memory_used_bytes 929181696
nv_gpu_memory_total_bytes{gpu_uuid="GPU-aaaa"} 1.5e+11
nv_gpu_memory_used_bytes{gpu_uuid="GPU-aaaa"} 3.0e+10
nv_gpu_memory_total_bytes{gpu_uuid="GPU-bbbb"} 1.5e+11
nv_gpu_memory_used_bytes{gpu_uuid="GPU-bbbb"} 7.5e+10
nv_inference_pending_request_count{model="lora_classifier",version="1"} 5
lora_texts_total{instance="lora_classifier_0_0",model_id="a \\"quoted\\" id"} 3
"""


def test_metrics_are_parsed_with_labels():
    metrics = MetricsSnapshot(METRICS)
    assert metrics.value(NV_CPU_MEMORY_TOTAL_BYTES) == 25325268992
    assert metrics.value(NV_INFERENCE_PENDING_REQUEST_COUNT, model="lora_classifier") == 5
    assert metrics.by_label(NV_GPU_MEMORY_USED_BYTES, "gpu_uuid") == {"GPU-aaaa": 3e10, "GPU-bbbb": 7.5e10}
    assert metrics.value(LORA_TEXTS_TOTAL, model_id='a "quoted" id') == 3
    assert metrics.value("absent") is None


def test_workers_are_named_per_instance_and_device():
    config = {"instance_group": [{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}, {"kind": "KIND_CPU", "count": 2}]}
    names = [slot[0] for slot in worker_slots(config, gpu_count=2)]
    assert names == ["cuda0-0", "cuda0-1", "cuda1-0", "cuda1-1", "cpu-0", "cpu-1"]
    assert [s[0] for s in worker_slots({"instance_group": [{"kind": "KIND_GPU", "count": 1}]}, gpu_count=3)] == [
        "cuda0-0",
        "cuda1-0",
        "cuda2-0",
    ]


def test_gpu_workers_get_their_own_gpu_memory_by_uuid():
    config = {"instance_group": [{"kind": "KIND_GPU", "count": 1, "gpus": [0, 1]}]}
    entries = workers(config, MetricsSnapshot(METRICS), {0: "GPU-aaaa", 1: "GPU-bbbb"})
    assert [(w["worker_id"], w["device"], w["used_memory_mb"], w["memory_usage_percent"]) for w in entries] == [
        ("cuda0-0", "cuda:0", round(3e10 / 2**20), 20.0),
        ("cuda1-0", "cuda:1", round(7.5e10 / 2**20), 50.0),
    ]


def test_predict_body_ranks_and_keeps_the_label_order():
    predictions = [Prediction(("乙", "甲", "丙"), (0.2, 0.5, 0.3)), Prediction(("乙", "甲", "丙"), (0.4, 0.2, 0.4))]
    body = predict_body("m", predictions, top_n=5)
    assert body["labels"] == ["甲", "乙"]  # a tie keeps the label map's order
    assert body["top_n"] == [[["甲", 0.5], ["丙", 0.3], ["乙", 0.2]], [["乙", 0.4], ["丙", 0.4], ["甲", 0.2]]]
    assert [list(d) for d in body["label_probabilities"]] == [["乙", "甲", "丙"]] * 2


def test_listing_keeps_the_counts_of_every_match_and_nulls_unloaded_fields():
    body = listing_body(
        {
            "models": [
                {"model_id": "a", "status": "loaded", "loaded_at": 100.0, "device": "cuda:1"},
                {"model_id": "b", "status": "unloaded", "loaded_at": None, "device": None},
            ],
            "total": 7,  # a page of a longer listing
            "loaded_count": 3,
        }
    )
    assert body["total"] == 7 and body["loaded_count"] == 3
    assert body["models"][0]["gpu_id"] == 1 and body["models"][0]["uptime_seconds"] > 0
    assert body["models"][1]["gpu_id"] is None and body["models"][1]["uptime_seconds"] is None


@pytest.fixture
def client():
    """The real app with Triton absent (a closed port): every Triton call is backend_unavailable."""
    port = free_port()
    settings = ShimSettings.load(
        {
            "TRITON_URL": f"127.0.0.1:{port}",
            "TRITON_METRICS_URL": f"http://127.0.0.1:{port}/metrics",
            "TRITON_TIMEOUT_S": "5",
            "MAX_BODY_BYTES": "1000",
        }
    )
    return create_app(settings).test_client()


def test_validation_happens_before_triton_is_called(client):
    response = client.post("/api/v1/inference/predict", json={"model_id": "a", "texts": []})
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_triton_absent_is_backend_unavailable_and_status_still_answers(client):
    response = client.post("/api/v1/inference/predict", json={"model_id": "a", "texts": ["x"]})
    assert response.status_code == 503 and response.json["error"] == "backend_unavailable"
    status = client.get("/api/v1/inference/status")
    assert status.status_code == 200 and status.json["service_status"] == "error" and status.json["workers"] == []


def test_body_limit_and_unknown_routes(client):
    assert client.post("/api/v1/inference/predict", data="x" * 2000, content_type="application/json").status_code == 413
    response = client.get("/api/v1/nowhere")
    assert response.status_code == 404 and response.json["error"] == "invalid_request"


def test_an_unexpected_exception_leaks_no_details(client, monkeypatch):
    def explode(self, document):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(TritonGateway, "control", explode)
    response = client.get("/api/v1/inference/models")
    assert response.status_code == 500 and response.json["error"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="MAX_BATCH_SIZE"):
        ShimSettings.load({"MAX_BATCH_SIZE": "0"})


def test_gunicorn_config_is_valid():
    gunicorn = str(REPO / ".venv" / "bin" / "gunicorn") if (REPO / ".venv").exists() else "gunicorn"
    done = subprocess.run(
        [gunicorn, "--check-config", "-c", "api_shim/gunicorn.conf.py", "api_shim.wsgi:app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_shim_never_imports_torch():
    code = "import sys, api_shim.wsgi; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


def test_the_gateway_error_mapping_survives_a_refused_connection():
    gateway = TritonGateway(f"127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        gateway.control({"op": "list"})


def test_asking_the_capacity_while_triton_is_down_leaves_the_clients_calls_alone():
    """Admission asks Triton's capacity from a thread while Triton may still be starting: that must not mark
    Triton down, or a client's first call once it is up would be refused by a stale failed probe."""
    gateway = TritonGateway(f"127.0.0.1:{free_port()}", timeout_s=5)
    probes = []
    gateway.watch = BackendWatch(gateway.watch.live_url, stall_s=5, probe=lambda: probes.append(1) or False)
    assert gateway.texts_at_once() is None
    assert gateway.texts_at_once() is None
    with pytest.raises(BackendUnavailable, match="unreachable"):  # it tried Triton itself
        gateway.control({"op": "list"})
    assert probes == []


@pytest.mark.parametrize(
    "path, body, words",
    [
        ("/api/v1/inference/predict", '{"model_id": "a", "texts": ["ok", "\\ud800"]}', "texts[1] is not valid Unicode"),
        ("/api/v1/inference/predict", '{"model_id": "\\udfff", "texts": ["ok"]}', "model_id is not valid Unicode"),
        ("/api/v1/inference/models/load", '{"model_dir": "x\\ud800"}', "model_dir is not valid Unicode"),
        ("/api/v1/inference/models/query", '{"model_ids": ["\\ud800"]}', "model_ids[0] is not valid Unicode"),
        ("/api/v1/inference/predict", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_bodies_no_encoder_accepts_are_invalid_requests(path, body, words):
    port = free_port()
    settings = ShimSettings.load({"TRITON_URL": f"127.0.0.1:{port}", "TRITON_TIMEOUT_S": "5"})
    response = create_app(settings).test_client().post(path, data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == "invalid_request" and words in response.json["message"]


def test_a_bug_is_not_reported_as_triton_being_unavailable():
    gateway = TritonGateway(f"127.0.0.1:{free_port()}", timeout_s=5)

    def bug():
        raise ValueError("a programming error")

    with pytest.raises(ValueError):
        gateway._call(bug)


def test_a_control_token_triton_refuses_is_the_services_fault_not_the_clients(monkeypatch):
    from lora_core.errors import InternalError, Unauthorized

    gateway = TritonGateway(f"127.0.0.1:{free_port()}", timeout_s=5, control_token="stale")

    def refused(fn):
        raise Unauthorized("control operations need this server's CONTROL_TOKEN")

    monkeypatch.setattr(gateway, "_call", refused)
    with pytest.raises(InternalError, match="CONTROL_TOKEN differs"):
        gateway.control({"op": "list"})
