"""The application factory: settings, the Triton gateway, blueprints, auth and the one error handler."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider

from lora_core.errors import BackendUnavailable

from . import node_load, observability, pages
from .admission import Admission
from .api_key import require_api_key
from .error_answers import error_answer
from .gateway import TritonGateway
from .node_load import NodeLoad
from .predict_route import PredictRoute
from .routes import inference
from .settings import ShimSettings

if TYPE_CHECKING:
    from .cluster_status import ClusterStatus

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")

meta = Blueprint("meta", __name__, url_prefix="/api/v1")


@meta.get("/health/live")
def live():
    """The process answers: for liveness probes (no auth, no Triton call)."""
    return jsonify({"status": "live"})


@meta.get("/health/ready")
def ready():
    """Triton answers and the model is ready: for readiness probes and load balancers (no auth)."""
    if not current_app.extensions["triton_gateway"].model_ready():
        raise BackendUnavailable("the lora_classifier model is not ready")
    return jsonify({"status": "ready"})


@meta.get("/openapi.json")
def openapi():
    return jsonify(current_app.extensions["openapi"])


class ContractJSON(DefaultJSONProvider):
    ensure_ascii = False  # "类别A", not "\u7c7b..."
    sort_keys = False  # label_probabilities keep the label map's order


def create_app(settings: ShimSettings | None = None) -> Flask:
    settings = settings or ShimSettings.load()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = ContractJSON(app)
    app.extensions["shim_settings"] = settings
    app.extensions["triton_gateway"] = TritonGateway(
        settings.triton_url,
        settings.triton_timeout_s,
        settings.predict_concurrency,
        control_token=settings.control_token,
        stall_s=settings.triton_stall_s,
        control_url=settings.triton_control_url,
        predict_retries=settings.predict_retries,
        coalesce_in_flight=settings.coalesce_in_flight,
        max_rows=settings.max_batch_size,
    )
    # One account of the node's load for every worker: the one gunicorn's master made before forking, or, in a
    # process no master prepared (a test client), one of its own.
    load = node_load.prepared() or NodeLoad.create()
    app.extensions["admission"] = Admission(
        load, settings.admission_max_wait_s, app.extensions["triton_gateway"].texts_at_once, settings.max_batch_size
    )
    if settings.admission_max_wait_s > 0:
        app.extensions["admission"].learn_capacity()
    if settings.etcd_endpoints:  # several nodes: status covers every one registered
        app.extensions["cluster_status"] = cluster_status(settings)
    app.extensions["openapi"] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    observability.install(app)  # first: requests refused for their key are counted too
    app.register_blueprint(inference)
    app.register_blueprint(meta)
    pages.install(app)
    if settings.api_key:
        app.before_request(_require_api_key)
    app.register_error_handler(Exception, _error_response)
    # Predict, the hot path, is answered before Flask (its own module says why); every other request goes on to it.
    route = PredictRoute(app.wsgi_app, settings, app.extensions["triton_gateway"], app.extensions["admission"])
    app.extensions["predict_route"] = route
    app.wsgi_app = route  # type: ignore[method-assign]
    return app


def cluster_status(settings: ShimSettings) -> ClusterStatus:
    # The cluster layer (lora_cluster: etcd3gw, requests) is imported only here, with ETCD_ENDPOINTS set.
    from lora_cluster.node_registry import NodeRegistry

    from .cluster_status import ClusterStatus

    # One round over the members, not the patient budget of a change: status must answer promptly.
    cluster = settings.etcd_cluster(budget_s=0)
    assert cluster is not None  # only called with ETCD_ENDPOINTS set
    registry = NodeRegistry(cluster, settings.etcd_prefix)
    return ClusterStatus(registry, settings.control_token, settings.node_status_timeout_s)


def _require_api_key() -> None:
    if request.path in pages.NO_KEY_PATHS:
        return  # probes, scrapers and the pages carry no credentials and get no model data
    expected = current_app.extensions["shim_settings"].api_key
    require_api_key(expected, request.headers.get("X-API-Key", ""), request.headers.get("Authorization", ""))


def _error_response(exc: Exception) -> tuple[Response, int]:
    """Every failure becomes the contract's body {"error", "message"}; nothing else reaches the client."""
    answer = error_answer(exc, request.method, request.path, current_app.extensions["shim_settings"].max_body_bytes)
    response = jsonify(answer.document)
    response.headers.update(answer.headers)
    return response, answer.status
