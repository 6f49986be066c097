"""GET /status and the health endpoints."""

from __future__ import annotations


def test_status_lists_one_cpu_worker_per_triton_instance(api):
    api.post("/inference/models/load", json={"model_dir": "alpha"})
    api.post("/inference/models/load", json={"model_dir": "gamma"})
    body = api.get("/inference/status").json()
    assert body["service_status"] == "running"
    assert [w["worker_id"] for w in body["workers"]] == ["cpu-0", "cpu-1"]
    assert body["total_workers"] == 2 and body["loaded_models_count"] == 2
    assert isinstance(body["pending_requests"], int) and body["pending_requests"] >= 0
    for worker in body["workers"]:
        assert worker["device"] == "cpu"
        assert worker["total_memory_mb"] > 0 and 0 < worker["used_memory_mb"] <= worker["total_memory_mb"]
        assert worker["free_memory_mb"] == worker["total_memory_mb"] - worker["used_memory_mb"]
        assert abs(worker["memory_usage_percent"] - 100 * worker["used_memory_mb"] / worker["total_memory_mb"]) < 0.1


def test_health_endpoints(api):
    assert api.get("/health/live").json() == {"status": "live"}
    assert api.get("/health/ready").json() == {"status": "ready"}


def test_the_openapi_document_is_served(api):
    import yaml

    from testkit.triton_harness import REPO

    assert api.get("/openapi.json").json() == yaml.safe_load(
        (REPO / "api_shim" / "openapi.yaml").read_text(encoding="utf-8")
    )
