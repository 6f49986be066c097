"""Loaded models survive a tritonserver restart; a broken entry or a damaged manifest never stops it."""

from __future__ import annotations

import shutil
from pathlib import Path

from testkit.tolerance import assert_same_rows
from testkit.triton_harness import LoraClient, expect_error

TEXTS = ["baba dede kiki", "类别 好坏", "lolo mumu nana"]


def restarted_client(triton) -> LoraClient:
    triton.restart()
    return LoraClient(triton.url)


def test_adapters_come_back_after_a_restart_with_the_same_probabilities(triton, client):
    client.control({"op": "load", "model_dir": "alpha"})
    client.control({"op": "load", "model_dir": "team/beta", "max_length": 16})
    before = {m: client.predict(TEXTS, [m] * 3) for m in ("alpha", "team/beta")}

    fresh = restarted_client(triton)
    assert sorted(fresh.loaded()) == ["alpha", "team/beta"]
    for model_id, rows in before.items():
        assert_same_rows(fresh.predict(TEXTS, [model_id] * 3), rows)
    status = fresh.control({"op": "status"})
    assert sorted(status["resident"]) == ["alpha", "team/beta"] and status["problems"] == {}
    fresh.close()


def test_an_entry_whose_files_vanished_is_reported_and_skipped(triton, client, triton_models_root):
    shutil.copytree(triton_models_root / "gamma", triton_models_root / "vanishing")
    try:
        client.control({"op": "load", "model_dir": "vanishing"})
        client.control({"op": "load", "model_dir": "alpha"})
        shutil.rmtree(triton_models_root / "vanishing")

        fresh = restarted_client(triton)
        status = fresh.control({"op": "status"})
        assert "vanishing" in status["problems"] and "does not exist" in status["problems"]["vanishing"]
        assert status["resident"] == ["alpha"]
        listing = {m["model_id"]: m for m in fresh.control({"op": "list"})["models"]}
        assert listing["vanishing"]["status"] == "loaded" and "does not exist" in listing["vanishing"]["problem"]
        expect_error("model_not_loaded", fresh.predict, ["x"], ["vanishing"])
        assert list(fresh.predict(["x"], ["alpha"])[0]) == ["类别A", "类别B", "类别C"]
        fresh.control({"op": "unload", "model_id": "vanishing"})  # the operator's fix: unload the entry
        assert "vanishing" not in fresh.control({"op": "status"})["problems"]
        fresh.close()
    finally:
        shutil.rmtree(triton_models_root / "vanishing", ignore_errors=True)


def test_a_damaged_manifest_is_kept_aside_and_the_server_starts(triton, client):
    client.control({"op": "load", "model_dir": "alpha"})
    state_dir = Path(triton.env["STATE_DIR"])
    triton.stop()
    (state_dir / "manifest.json").write_text('{"generation": 3, "models": {"alpha": {"model_id": "alp')
    triton.start()
    fresh = LoraClient(triton.url)
    kept = list(state_dir.glob("manifest.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_text().startswith('{"generation": 3')
    assert fresh.loaded() == []
    assert fresh.control({"op": "load", "model_dir": "alpha"})["changed"]
    assert fresh.loaded() == ["alpha"]
    fresh.close()
    kept[0].unlink()


def test_a_manifest_with_one_bad_entry_keeps_the_good_ones(triton, client):
    client.control({"op": "load", "model_dir": "alpha"})
    client.control({"op": "load", "model_dir": "gamma"})
    state_dir = Path(triton.env["STATE_DIR"])
    triton.stop()
    manifest = state_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"max_length": 512', '"max_length": "lots"', 1))
    triton.start()
    fresh = LoraClient(triton.url)
    assert fresh.loaded() == ["gamma"]  # alpha's entry was unreadable; gamma's was not
    assert len(list(state_dir.glob("manifest.json.damaged-*"))) == 1
    fresh.close()
    for kept in state_dir.glob("manifest.json.damaged-*"):
        kept.unlink()
