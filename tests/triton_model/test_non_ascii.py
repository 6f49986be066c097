"""Non-ASCII model dirs (and stems) against a real tritonserver.

Triton's Python backend stub embeds Python with an isolated configuration: whatever LANG / LC_ALL say, its
file-system encoding is ASCII. adapter_manager.layout reaches such names through their UTF-8 bytes; these
tests load, list, predict, unload and restart with them, in the stub itself.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from testkit.factories import OutputSpec, make_training_output
from testkit.tolerance import assert_same_rows
from testkit.triton_harness import LoraClient, TritonServer, expect_error, server_settings
from testkit.triton_tests_helpers import assert_rows_close, expected_rows

TEXTS = ["类别 好坏", "baba dede kiki", "😀 café"]
NAMES = {"类别/模型": "model", "café": "model", "😀": "model", "数据/ünï": "模型"}  # model_dir -> stem


def test_non_ascii_model_dirs_load_list_predict_and_unload(client, base_dir, reference, triton_models_root):
    tag = uuid.uuid4().hex[:8]
    ids = {f"{tag}-{name}": stem for name, stem in NAMES.items()}  # a unique top directory each
    try:
        for model_id, stem in ids.items():
            make_training_output(triton_models_root, model_id, base_dir, OutputSpec(stem=stem, num_labels=3, seed=41))
        client.wait_listed(list(ids), "unloaded")

        for model_id in ids:
            answer = client.control({"op": "load", "model_dir": model_id})
            assert answer["model_id"] == model_id and answer["status"] == "loaded"
        assert set(ids) <= set(client.loaded())
        # one request mixing every non-ASCII model, each row equal to the plain transformers + peft reference
        mixed_ids = [m for m in ids for _ in TEXTS]
        want = [row for m in ids for row in expected_rows(reference, triton_models_root, m, TEXTS)]
        for got, expected in zip(client.predict(TEXTS * len(ids), mixed_ids), want, strict=True):
            assert_rows_close(got, expected)

        for model_id in ids:
            assert client.control({"op": "unload", "model_id": model_id})["status"] == "unloaded"
            expect_error("model_not_loaded", client.predict, ["x"], [model_id])
        assert not set(ids) & set(client.loaded())
    finally:
        for model_id in ids:
            shutil.rmtree(triton_models_root / model_id.split("/")[0], ignore_errors=True)


def test_a_missing_non_ascii_model_dir_is_not_found(client):
    for model_dir in ("类别/不存在", "café-nowhere", "😀-nowhere"):
        expect_error("model_not_found", client.control, {"op": "load", "model_dir": model_dir})


def test_non_ascii_models_survive_a_restart(tmp_path: Path, base_dir, reference):
    """Own server: the manifest stores the real names (UTF-8) and every one comes back after a restart."""
    root = tmp_path / "模型库"  # the models root itself is non-ASCII too
    for model_id, stem in NAMES.items():
        make_training_output(root, model_id, base_dir, OutputSpec(stem=stem, num_labels=3, seed=42))
    state_dir = tmp_path / "state"
    env = server_settings(base_dir, root, state_dir, MAX_ADAPTERS="8")
    server = TritonServer(tmp_path / "triton", env, instances=1)
    (tmp_path / "triton").mkdir()
    server.start()
    client = None
    try:
        client = LoraClient(server.url)
        for model_id in NAMES:
            client.control({"op": "load", "model_dir": model_id})
        before = {m: client.predict(TEXTS, [m] * 3) for m in NAMES}
        for model_id, rows in before.items():
            for got, want in zip(rows, expected_rows(reference, root, model_id, TEXTS)):
                assert_rows_close(got, want)
        manifest = json.loads((state_dir / "manifest.json").read_text(encoding="utf-8"))
        assert sorted(manifest["models"]) == sorted(NAMES)
        client.close()

        server.restart()
        client = LoraClient(server.url)
        assert sorted(client.loaded()) == sorted(NAMES)
        status = client.control({"op": "status"})
        assert sorted(status["resident"]) == sorted(NAMES) and status["problems"] == {}
        for model_id, rows in before.items():
            assert_same_rows(client.predict(TEXTS, [model_id] * 3), rows)
            client.control({"op": "unload", "model_id": model_id})
        assert client.loaded() == []
        assert json.loads((state_dir / "manifest.json").read_text(encoding="utf-8"))["models"] == {}
    finally:
        if client is not None:
            client.close()
        server.stop()
