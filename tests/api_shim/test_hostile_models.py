"""Hostile training outputs through the real shim: the wire codes, nothing runs, nothing loaded is disturbed.

The engine-level cases are in tests/adapter_manager/test_hostile_artifacts.py; these show the HTTP side.
Each test creates its outputs under the session's models root with unique names and removes them after.
"""

from __future__ import annotations

import os
import pickle
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch

from lora_core.metric_names import LORA_TEXTS_TOTAL
from testkit.conditions import wait_for
from testkit.factories import OutputSpec, make_training_output
from testkit.tolerance import assert_same_predictions

LOAD, UNLOAD, PREDICT, MODELS = (
    "/inference/models/load",
    "/inference/models/unload",
    "/inference/predict",
    "/inference/models",
)
TEXTS = ["baba dede fifi", "类别 好坏", "kaka lili mumu"]
INSTANCES = ("lora_classifier_0_0", "lora_classifier_0_1")


class WritesAFile:
    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def scratch(triton_models_root, tmp_path):
    """A unique prefix under the models root; everything under it is removed afterwards."""
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    yield name
    for path in triton_models_root.iterdir():
        if path.name.startswith(name):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


@pytest.fixture
def alpha(api):
    """alpha loaded, and what it answers for TEXTS; checked unchanged after every refusal."""
    assert api.post(LOAD, json={"model_dir": "alpha"}).status_code == 200
    return api.post(PREDICT, json={"model_id": "alpha", "texts": TEXTS, "top_n": 3}).json()


def assert_refused(api, alpha, model_dir, status: int, code: str, words: str = "") -> None:
    response = api.post(LOAD, json={"model_dir": model_dir})
    body = response.json()
    assert (response.status_code, body["error"]) == (status, code), body
    assert words in body["message"] and "Traceback" not in response.text, body["message"]
    assert_same_predictions(api.post(PREDICT, json={"model_id": "alpha", "texts": TEXTS, "top_n": 3}).json(), alpha)
    assert api.get(MODELS).status_code == 200


def test_hostile_files_are_invalid_models_and_never_run(api, alpha, scratch, triton_models_root, base_dir, tmp_path):
    marker = tmp_path / "pwned"
    cases = {
        "labels": (
            "model.head.pt.pkl",
            lambda out: (out / "model.head.pt.pkl").write_bytes(pickle.dumps(["a", WritesAFile(marker), "c"])),
            "names the global",
        ),
        "module": (
            "model.head.pt",
            lambda out: torch.save(torch.nn.Linear(32, 3), out / "model.head.pt"),
            "cannot be read safely",
        ),
        "bin": (
            "adapter_model.bin",
            lambda out: torch.save({"x": WritesAFile(marker)}, out / "model.lora" / "adapter_model.bin"),
            "cannot be read safely",
        ),
        "cut": (
            "adapter_model.safetensors",
            lambda out: (out / "model.lora" / "adapter_model.safetensors").write_bytes(b"\x08" + bytes(20)),
            "cannot be read safely",
        ),
        "shape": (
            "model.head.pt",
            lambda out: torch.save({"weight": torch.zeros(3, 31)}, out / "model.head.pt"),
            "hidden size",
        ),
        "nan": (
            "model.head.pt",
            lambda out: torch.save({"weight": torch.full((3, 32), float("nan"))}, out / "model.head.pt"),
            "finite",
        ),
    }
    for case, (named, damage, words) in cases.items():
        spec = OutputSpec(weights_format="bin" if case == "bin" else "safetensors", seed=40)
        out = make_training_output(triton_models_root, f"{scratch}-{case}", base_dir, spec)
        damage(out)
        assert_refused(api, alpha, f"{scratch}-{case}", 422, "invalid_model", named)
        assert words in api.post(LOAD, json={"model_dir": f"{scratch}-{case}"}).json()["message"]
    assert not marker.exists()
    assert api.loaded() == ["alpha"]


def test_bad_model_dirs_and_symlinks_on_the_wire(api, alpha, scratch, triton_models_root, tmp_path, base_dir):
    outside = make_training_output(tmp_path, "outside", base_dir, OutputSpec(seed=41))
    os.symlink(outside, triton_models_root / f"{scratch}-escape")
    os.symlink(f"{scratch}-loop", triton_models_root / f"{scratch}-loop")
    out = shutil.copytree(triton_models_root / "gamma", triton_models_root / f"{scratch}-artifact")
    shutil.move(out / "gamma.head.pt.pkl", tmp_path / "labels.pkl")
    os.symlink(tmp_path / "labels.pkl", out / "gamma.head.pt.pkl")
    looped = shutil.copytree(triton_models_root / "gamma", triton_models_root / f"{scratch}-artloop")
    (looped / "gamma.head.pt").unlink()
    os.symlink("gamma.head.pt", looped / "gamma.head.pt")
    two = shutil.copytree(triton_models_root / "gamma", triton_models_root / f"{scratch}-two")
    shutil.copy(two / "gamma.head.pt", two / "other.head.pt")

    assert_refused(api, alpha, f"{scratch}-escape", 400, "invalid_request", "outside the models root")
    assert_refused(api, alpha, f"{scratch}-loop", 400, "invalid_request", "cannot be resolved")
    assert_refused(api, alpha, "a" * 300, 400, "invalid_request")  # was a 500 (ENAMETOOLONG) before
    assert_refused(api, alpha, "../alpha", 400, "invalid_request", "'..'")
    assert_refused(api, alpha, "alpha\x00", 400, "invalid_request", "control characters")
    assert_refused(api, alpha, "%2e%2e/%2e%2e/etc", 404, "model_not_found")  # no URL decoding inside JSON
    assert_refused(
        api, alpha, f"{scratch}-artifact", 422, "invalid_model", "gamma.head.pt.pkl links outside the models root"
    )
    assert_refused(api, alpha, f"{scratch}-artloop", 422, "invalid_model", "gamma.head.pt cannot be resolved")
    assert_refused(api, alpha, f"{scratch}-two", 422, "invalid_model", "several models in one directory")
    listed = {m["model_id"] for m in api.get(MODELS).json()["models"]}
    assert "alpha" in listed and not any(m.startswith(scratch) for m in listed)


def _served_by_both_instances(triton, shim, model_id: str) -> None:
    """Send predicts until each Triton instance has served `model_id` (so each holds it in memory)."""

    def count(instance: str) -> float:
        return triton.metric(LORA_TEXTS_TOTAL, model_id=model_id, instance=instance)

    def predict(_):
        with requests.Session() as session:
            return session.post(
                f"{shim.base}{PREDICT}", json={"model_id": model_id, "texts": TEXTS}, timeout=60
            ).status_code

    for _ in range(10):
        with ThreadPoolExecutor(max_workers=16) as pool:
            assert set(pool.map(predict, range(32))) == {200}
        try:  # the counts reach Triton's metrics within the model's METRICS_FLUSH_S
            wait_for(lambda: all(count(i) > 0 for i in INSTANCES), 3, "both instances counted")
            return
        except AssertionError:
            continue
    pytest.fail("one Triton instance never served the model")


def test_a_model_changed_on_disk_keeps_serving_and_a_failed_reload_keeps_it(
    api, alpha, shim, triton, scratch, triton_models_root
):
    model_id = f"{scratch}-retrained"
    out = shutil.copytree(triton_models_root / "team/beta", triton_models_root / model_id)
    assert api.post(LOAD, json={"model_dir": model_id}).status_code == 200
    _served_by_both_instances(triton, shim, model_id)
    before = api.post(PREDICT, json={"model_id": model_id, "texts": TEXTS, "top_n": 5}).json()

    for path in out.rglob("*"):
        if path.is_file():
            path.write_bytes(os.urandom(64))  # the training job rewrote everything with garbage

    for _ in range(6):  # both instances keep serving from memory
        assert_same_predictions(
            api.post(PREDICT, json={"model_id": model_id, "texts": TEXTS, "top_n": 5}).json(), before
        )
    assert api.post(LOAD, json={"model_dir": model_id}).json()["message"] == f"model {model_id} is already loaded"
    refused = api.post(LOAD, json={"model_dir": model_id, "reload": True})
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_model", refused.text
    shutil.rmtree(out)
    refused = api.post(LOAD, json={"model_dir": model_id, "reload": True})
    assert refused.status_code == 404 and refused.json()["error"] == "model_not_found", refused.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda _: requests.post(
                    f"{shim.base}{PREDICT}", json={"model_id": model_id, "texts": TEXTS, "top_n": 5}, timeout=60
                ).json(),
                range(16),
            )
        )
    for answer in answers:
        assert_same_predictions(answer, before)
    assert model_id in api.loaded()
    assert api.post(UNLOAD, json={"model_id": model_id}).status_code == 200  # its directory is gone: unload still works
    assert_same_predictions(api.post(PREDICT, json={"model_id": "alpha", "texts": TEXTS, "top_n": 3}).json(), alpha)
