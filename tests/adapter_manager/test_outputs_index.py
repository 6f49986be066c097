"""The index of training outputs stays true to the models root: outputs added, removed, renamed, made
incomplete or complete, while a refresh lists only the directories that changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from adapter_manager.outputs_index import (
    IndexRefresher,
    TrainingOutputIndex,
    find_output,
    list_training_outputs,
    output_stem,
)
from testkit.conditions import wait_for
from testkit.factories import touch_output

LONG_AGO_NS = 1_000_000_000 * 1_000_000_000  # 2001: far from "recently modified"


def age(*directories: Path) -> None:
    """Give directories an old mtime, as outputs written long before the service started have."""
    for directory in directories:
        os.utime(directory, ns=(LONG_AGO_NS, LONG_AGO_NS))


def aged_output(directory: Path, stem: str = "m") -> Path:
    touch_output(directory, stem)
    age(directory / f"{stem}.lora", directory)
    return directory


@pytest.fixture
def index(models_root):
    return TrainingOutputIndex(models_root)


def test_an_unchanged_root_is_only_stat_ed(models_root, index):
    """The incremental path: a stat or two per output and no listing (bench/listing.py measures its cost)."""
    for i in range(5):
        aged_output(models_root / "team" / f"job-{i}")
    age(models_root / "team", models_root)
    assert index.model_ids() == tuple(f"team/job-{i}" for i in range(5))
    index.refresh()
    assert index.listed_directories == 0 and len(index.model_ids()) == 5


def test_outputs_added_removed_and_renamed_show_at_the_next_refresh(models_root, index):
    aged_output(models_root / "a")
    assert index.model_ids() == ("a",)
    touch_output(models_root / "team" / "b")
    index.refresh()
    assert index.model_ids() == ("a", "team/b")
    (models_root / "team" / "b").rename(models_root / "team" / "c")
    index.refresh()
    assert index.model_ids() == ("a", "team/c")
    shutil.rmtree(models_root / "a")
    index.refresh()
    assert index.model_ids() == ("team/c",)


@pytest.mark.parametrize(
    "removed", ["m.lora/adapter_model.safetensors", "m.lora/adapter_config.json", "m.head.pt.pkl", "m.lora"]
)
def test_an_output_made_incomplete_leaves_and_comes_back_when_complete(models_root, index, removed):
    """Files inside the adapter folder do not move the output directory's mtime; the index looks there too."""
    job = aged_output(models_root / "job")
    age(models_root)
    assert index.model_ids() == ("job",)
    target = job / removed
    kept = models_root.parent / "kept"
    shutil.move(target, kept)
    index.refresh()
    assert index.model_ids() == ()
    shutil.move(kept, target)
    index.refresh()
    assert index.model_ids() == ("job",)


def test_a_change_within_the_same_timestamp_is_not_missed(models_root, index):
    """A directory listed in the same clock tick as its last change is listed again next time, even when its
    mtime then reads the same (coarse timestamps, or writes landing within one tick)."""
    job = models_root / "job"
    touch_output(job)
    weights = job / "m.lora" / "adapter_model.safetensors"
    weights.unlink()
    adapter_mtime = os.stat(job / "m.lora").st_mtime_ns
    assert index.model_ids() == ()
    weights.write_bytes(b"x")
    os.utime(job / "m.lora", ns=(adapter_mtime, adapter_mtime))  # as if written within the same tick
    index.refresh()
    assert index.model_ids() == ("job",)


def test_only_complete_outputs_with_loadable_names_are_listed(models_root, tmp_path):
    touch_output(models_root / "good")
    touch_output(models_root / "two-stems", stem="x")
    touch_output(models_root / "two-stems", stem="y")
    touch_output(models_root / "bin-weights")
    weights = models_root / "bin-weights" / "m.lora" / "adapter_model.safetensors"
    weights.rename(weights.with_name("adapter_model.bin"))
    touch_output(models_root / "no-config")
    (models_root / "no-config" / "m.lora" / "adapter_config.json").unlink()
    touch_output(models_root / "head-is-a-dir")
    (models_root / "head-is-a-dir" / "m.head.pt").unlink()
    (models_root / "head-is-a-dir" / "m.head.pt").mkdir()
    os.symlink(touch_output(tmp_path / "outside" / "evil"), models_root / "linked-dir")  # not followed
    touch_output(models_root / "escaping-head")
    (models_root / "escaping-head" / "m.head.pt").unlink()
    os.symlink(tmp_path / "outside" / "evil" / "m.head.pt", models_root / "escaping-head" / "m.head.pt")
    touch_output(models_root / "inside-link")
    (models_root / "inside-link" / "m.head.pt").unlink()
    os.symlink(models_root / "good" / "m.head.pt", models_root / "inside-link" / "m.head.pt")  # stays inside
    touch_output(models_root / os.fsdecode(b"latin1-\xe9"))  # not UTF-8: no client can name it
    touch_output(models_root / "a" / "b" / "c" / "d")  # 4 levels down: listed
    touch_output(models_root / "a" / "b" / "c" / "d2" / "e")  # 5 levels down: too deep
    assert list_training_outputs(models_root) == ["a/b/c/d", "bin-weights", "good", "inside-link"]


def test_an_output_inside_an_output_is_not_looked_for(models_root):
    touch_output(models_root / "job")
    touch_output(models_root / "job" / "nested")
    assert list_training_outputs(models_root) == ["job"]


def test_a_missing_root_lists_nothing_until_it_appears(tmp_path):
    root = tmp_path / "not-yet"
    index = TrainingOutputIndex(root)
    assert index.model_ids() == ()
    touch_output(root / "job")
    index.refresh()
    assert index.model_ids() == ("job",)


def test_find_output_looks_at_one_directory(models_root, tmp_path):
    touch_output(models_root / "team" / "job")
    touch_output(models_root / "broken")
    (models_root / "broken" / "m.head.pt.pkl").unlink()
    os.symlink(touch_output(tmp_path / "outside"), models_root / "escape")
    assert find_output(models_root, "team/job")
    assert not find_output(models_root, "team")
    assert not find_output(models_root, "broken")
    assert not find_output(models_root, "escape")
    assert not find_output(models_root, "missing")
    assert output_stem(str(models_root / "team" / "job"), os.path.realpath(models_root)) == "m"


def test_the_refresher_keeps_the_index_current(models_root):
    index = TrainingOutputIndex(models_root)
    refresher = IndexRefresher(index, interval_s=0.05).start()
    try:
        touch_output(models_root / "fresh")
        wait_for(lambda: index.model_ids() == ("fresh",), 10, "the new output listed")
        shutil.rmtree(models_root / "fresh")
        wait_for(lambda: index.model_ids() == (), 10, "the removed output gone")
    finally:
        refresher.stop()
