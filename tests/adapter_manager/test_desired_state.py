"""The desired state's compare-and-set interface, as the file manifest implements it and the service uses it."""

from __future__ import annotations

import json
import time

from adapter_manager.manifest import AdapterManifest, ManifestEntry
from adapter_manager.service import AdapterService
from testkit.factories import OutputSpec, make_training_output


def entry(model_id: str, version: int = 1) -> ManifestEntry:
    return ManifestEntry(model_id=model_id, max_length=64, version=version, loaded_at=time.time())


def test_compare_and_set_writes_only_on_the_generation_it_read(tmp_path):
    store = AdapterManifest(tmp_path)
    start = store.read()
    assert start.generation == 0 and start.entries == {}
    assert store.compare_and_set(0, {"a": entry("a")})
    assert store.read().generation == 1
    assert not store.compare_and_set(0, {"b": entry("b")})  # stale: someone wrote generation 1 meanwhile
    assert sorted(store.read().entries) == ["a"] and store.read().generation == 1


class RacedStore(AdapterManifest):
    """Another instance writes between this one's read and its first compare-and-set."""

    def __init__(self, state_dir, intruder: str) -> None:
        super().__init__(state_dir)
        self.intruder, self.attempts = intruder, 0

    def compare_and_set(self, expected_generation, entries) -> bool:
        self.attempts += 1
        if self.attempts == 1:
            other = AdapterManifest(self.state_dir)
            state = other.read()
            assert other.compare_and_set(state.generation, {**state.entries, self.intruder: entry(self.intruder)})
        return super().compare_and_set(expected_generation, entries)


def test_a_load_that_loses_the_race_is_redone_on_the_fresh_state(engine, models_root, base_dir, tmp_path):
    make_training_output(models_root, "mine", base_dir, OutputSpec(seed=2))
    store = RacedStore(tmp_path / "state", intruder="theirs")
    service = AdapterService(engine, store, "cpu-0", 100_000, max_adapters=8)
    service.load(service_command("mine"))
    assert store.attempts == 2
    assert sorted(store.read().entries) == ["mine", "theirs"]  # neither write was lost


def service_command(model_dir: str):
    from lora_core.commands import parse_command

    return parse_command({"op": "load", "model_dir": model_dir}, 512)


def test_an_entry_whose_id_is_not_canonical_is_left_out_as_damaged(tmp_path):
    store = AdapterManifest(tmp_path)
    assert store.compare_and_set(0, {"a": entry("a")})
    document = json.loads(store.path.read_text())
    document["models"]["../b"] = {**document["models"]["a"], "model_id": "../b"}
    store.path.write_text(json.dumps(document))
    state = store.read()
    assert sorted(state.entries) == ["a"]
    assert any("not a canonical model id" in p for p in state.problems)
    assert list(tmp_path.glob("manifest.json.damaged-*"))  # the damaged file is kept aside, never deleted


def test_an_entry_whose_max_length_does_not_fit_this_base_is_a_problem_not_a_crash(
    engine, models_root, base_dir, tmp_path
):
    make_training_output(models_root, "wide", base_dir, OutputSpec(seed=4))
    store = AdapterManifest(tmp_path / "state")
    assert store.compare_and_set(0, {"wide": ManifestEntry("wide", max_length=4096, version=1, loaded_at=time.time())})
    service = AdapterService(engine, store, "cpu-0", 100_000, max_adapters=8)
    service.sync()
    assert not engine.is_loaded("wide")
    assert "max_length must be between 2 and 512, got 4096" in service.problems["wide"]
    assert service.load_failures == {"invalid_request": 1}  # a desired-state load that failed is counted too
