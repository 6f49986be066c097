"""The `/api/v1/inference` blueprint: six endpoints, thin. Validation, gateway call, response shape."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from lora_core.commands import LISTING_STATUSES, MAX_MODEL_DIR_CHARS
from lora_core.errors import InvalidRequest

from .responses import listing_body
from .status import service_status
from .validation import (
    bool_field,
    int_field,
    json_object,
    path_field,
    query_choice,
    query_count,
    string_field,
    string_list_field,
)

inference = Blueprint("inference", __name__, url_prefix="/api/v1/inference")

MAX_MODEL_ID_CHARS = MAX_MODEL_DIR_CHARS


def _gateway():
    return current_app.extensions["triton_gateway"]


def _settings():
    return current_app.extensions["shim_settings"]


@inference.post("/models/load")
def load_model():
    body = json_object(request)
    document = {
        "op": "load",
        "model_dir": path_field(body, "model_dir", max_chars=MAX_MODEL_ID_CHARS),
        # A JSON integer or nothing; its range is the base's, checked on Triton's side (lora_core.commands).
        "max_length": int_field(body, "max_length", None),
        "reload": bool_field(body, "reload"),
    }
    answer = _gateway().control(document)
    return jsonify(
        {
            "model_id": answer["model_id"],
            "status": answer["status"],
            "message": answer["message"],
            "reloaded": document["reload"] and answer["changed"],
            "max_length": answer["max_length"],
            "labels": answer["labels"],
        }
    )


@inference.post("/models/unload")
def unload_model():
    body = json_object(request)
    model_id = string_field(body, "model_id", max_chars=MAX_MODEL_ID_CHARS)
    answer = _gateway().control({"op": "unload", "model_id": model_id})
    return jsonify({"model_id": answer["model_id"], "status": answer["status"], "message": answer["message"]})


@inference.post("/predict")
def predict():
    """Answered by api_shim.predict_route before Flask sees the request, but for the spellings only Flask's routing
    matches (`//api/v1/inference/predict`, a lowercase method): answered here by the same code."""
    return jsonify(current_app.extensions["predict_route"].answer(request.environ))


@inference.get("/models")
def list_models():
    """The contract's listing; `status`, `limit` and `offset` filter it (beyond the contract: without them,
    every model). Other query parameters are ignored, as on every GET."""
    document = {
        "op": "list",
        "status": query_choice(request.args, "status", LISTING_STATUSES),
        "limit": query_count(request.args, "limit"),
        "offset": query_count(request.args, "offset") or 0,
    }
    return jsonify(listing_body(_gateway().control(document)))


@inference.post("/models/query")
def query_models():
    body = json_object(request)
    model_ids = string_list_field(
        body, "model_ids", _settings().max_texts_per_request, MAX_MODEL_ID_CHARS, item_too_long=InvalidRequest
    )
    # Spellings fold on Triton's side ('team/job/' queries 'team/job'), where the directories are looked at.
    return jsonify(listing_body(_gateway().control({"op": "query", "model_ids": model_ids})))


@inference.get("/status")
def status():
    cluster = current_app.extensions.get("cluster_status")
    if cluster is not None:
        return jsonify(cluster.status())
    settings = _settings()
    return jsonify(service_status(_gateway(), settings.triton_metrics_url, settings.backend_state_file))
