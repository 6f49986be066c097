"""The naive baseline, as a user would write it: one Flask process holding a PeftModel.

Every adapter is loaded into one `PeftModel` up front; each predict request takes a lock, calls
`set_adapter(model_id)`, runs the encoder on that request's texts, pools and applies that model's head.
It cannot batch across requests. It answers the contract's predict endpoint with the same body as the
shim, so the same load generator drives both.

    .venv/bin/python -m bench.naive_server --base DIR --models-root DIR --port 8100 MODEL_ID [MODEL_ID ...]
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from flask import Flask, jsonify, request
from peft import PeftModel
from transformers import AutoModel, AutoTokenizer

from adapter_manager.artifacts import read_head, read_labels
from adapter_manager.layout import locate
from adapter_manager.pooling import pool


def create_app(base: Path, models_root: Path, model_ids: list[str]) -> Flask:
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    encoder = AutoModel.from_pretrained(str(base))
    heads, labels = {}, {}
    peft = None
    for model_id in model_ids:
        paths = locate(models_root, model_id)
        if peft is None:
            peft = PeftModel.from_pretrained(encoder, str(paths.adapter_dir), adapter_name=model_id)
        else:
            peft.load_adapter(str(paths.adapter_dir), adapter_name=model_id)
        labels[model_id] = read_labels(paths.labels_file, model_id)
        heads[model_id] = read_head(paths.head_file, int(encoder.config.hidden_size), model_id)
    peft.eval()
    lock = threading.Lock()  # one PeftModel, one active adapter at a time
    app = Flask(__name__)

    @app.post("/api/v1/inference/predict")
    def predict():
        body = request.get_json()
        model_id, texts, top_n = body["model_id"], body["texts"], int(body.get("top_n", 3))
        if model_id not in heads:
            return jsonify({"error": "model_not_loaded", "message": f"model {model_id} is not loaded"}), 404
        batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
        with lock, torch.inference_mode():
            peft.set_adapter(model_id)
            hidden = peft(**batch).last_hidden_state
        head = heads[model_id]
        with torch.inference_mode():
            probabilities = torch.softmax(head.logits(pool(hidden.float(), batch["attention_mask"], head.pooling)), -1)
        names = labels[model_id]
        rows = probabilities.tolist()
        ranked = [sorted(zip(names, row), key=lambda pair: -pair[1]) for row in rows]
        return jsonify(
            {
                "model_id": model_id,
                "labels": [r[0][0] for r in ranked],
                "top_n": [[list(pair) for pair in r[:top_n]] for r in ranked],
                "label_probabilities": [dict(zip(names, row)) for row in rows],
            }
        )

    @app.get("/api/v1/health/ready")
    def ready():
        return jsonify({"status": "ready"})

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--models-root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("model_ids", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    app = create_app(args.base, args.models_root, args.model_ids)
    app.run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
