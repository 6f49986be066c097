"""The bare WSGI apps of bench/floors.py, in a module that imports nothing heavy (gunicorn's workers import it)."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, jsonify, request

ANSWER = json.dumps({"model_id": "m", "labels": [["x"]], "label_probabilities": [{"x": 1.0}]}).encode()


def bare_wsgi(environ: dict[str, Any], start_response) -> list[bytes]:
    """A predict's fixed answer, after reading the body: gunicorn's gthread worker and nothing else."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]


bare_flask = Flask("bare")


@bare_flask.get("/")
def live():
    return "ok"


@bare_flask.post("/api/v1/inference/predict")
def predict():
    body = request.get_json()
    return jsonify({"model_id": body["model_id"], "labels": [["x"]], "label_probabilities": [{"x": 1.0}]})
