"""One real tritonserver (2 CPU instances) per session, serving tiny generated models."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import OutputSpec, make_training_output
from triton_harness import LoraClient, TritonServer

MAX_ADAPTERS = 10
# The models every Triton test can load: different ranks, targets, heads, pooling and label counts.
MODELS = {
    "alpha": OutputSpec(rank=4, target_modules=("query", "value"), num_labels=3, seed=11),
    "team/beta": OutputSpec(stem="beta", rank=8, target_modules=("query", "key", "value", "dense"), num_labels=5,
                            head_layout="two-layer", pooling="mean", weights_format="bin", seed=12),
    "gamma": OutputSpec(stem="gamma", rank=2, target_modules=("key",), num_labels=2, labels_format="label_to_index", seed=13),
    **{f"bench-{i}": OutputSpec(stem=f"bench{i}", rank=8, num_labels=4, seed=20 + i) for i in range(8)},
}


@pytest.fixture(scope="session")
def triton_models_root(tmp_path_factory, base_dir) -> Path:
    root = tmp_path_factory.mktemp("triton-models")
    for model_id, spec in MODELS.items():
        make_training_output(root, model_id, base_dir, spec)
    broken = make_training_output(root, "broken", base_dir, OutputSpec(seed=99))
    (broken / "model.head.pt.pkl").write_bytes(b"not a pickle")
    return root


@pytest.fixture(scope="session")
def triton(tmp_path_factory, base_dir, triton_models_root):
    workdir = tmp_path_factory.mktemp("triton")
    env = {
        "BASE_MODEL_DIR": str(base_dir),
        "MODELS_ROOT": str(triton_models_root),
        "STATE_DIR": str(workdir / "state"),
        "MAX_ADAPTERS": str(MAX_ADAPTERS),
        "DTYPE": "float32",
    }
    server = TritonServer(workdir, env, instances=2)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(triton):
    """A client; whatever a test loaded is unloaded afterwards, so tests do not see each other's models."""
    lora = LoraClient(triton.url)
    yield lora
    for model_id in lora.loaded():
        lora.control({"op": "unload", "model_id": model_id})
    lora.close()
