"""The contract's response shapes, built from gateway results (no Flask here)."""

from __future__ import annotations

import json
import time
from typing import Any
from collections.abc import Sequence

from .gateway import Prediction


def json_bytes(document: Any) -> bytes:
    """`document` as the shim's JSON bodies are written (Flask's jsonify with api_shim.app.ContractJSON): compact,
    keys in their order, non-ASCII as UTF-8, a newline at the end."""
    return (json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def predict_body(model_id: str, predictions: Sequence[Prediction], top_n: int) -> dict[str, Any]:
    """`labels`: top-1 per text; `top_n`: [label, p] pairs, highest first (ties in label-map order), all
    labels when top_n exceeds their number; `label_probabilities`: every label, in label-map order."""
    labels, tops, distributions = [], [], []
    for prediction in predictions:
        ranked = sorted(zip(prediction.labels, prediction.probabilities), key=lambda pair: -pair[1])
        labels.append(ranked[0][0])
        tops.append([[label, p] for label, p in ranked[:top_n]])
        distributions.append(dict(zip(prediction.labels, prediction.probabilities)))
    return {"model_id": model_id, "labels": labels, "top_n": tops, "label_probabilities": distributions}


def model_entry(model: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """One model of the listing: the contract's four fields first, then extras."""
    now = time.time() if now is None else now
    loaded = model.get("status") == "loaded"
    device = model.get("device") if loaded else None
    gpu_id = int(device.split(":")[1]) if loaded and device and device.startswith("cuda:") else None
    entry: dict[str, Any] = {
        "model_id": model["model_id"],
        "status": model["status"],
        "gpu_id": gpu_id,
        "uptime_seconds": round(max(0.0, now - model["loaded_at"]), 3) if loaded and model.get("loaded_at") else None,
        "device": device,
    }
    for extra in ("max_length", "labels", "problem"):
        if model.get(extra) is not None:
            entry[extra] = model[extra]
    return entry


def listing_body(answer: dict[str, Any]) -> dict[str, Any]:
    """The listing (or query) answer of Triton's model: its page of models, with the counts of every match."""
    entries = [model_entry(m) for m in answer["models"]]
    return {"models": entries, "total": answer["total"], "loaded_count": answer["loaded_count"]}
