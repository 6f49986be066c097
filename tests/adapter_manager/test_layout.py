"""Locating a training output: model_dir stays inside the models root, <stem> is discovered."""

import os
import shutil

import pytest

from lora_core.errors import InvalidModel, InvalidRequest, ModelNotFound
from adapter_manager.layout import locate
from adapter_manager.outputs_index import list_training_outputs
from testkit.factories import touch_output
from lora_core.commands import normalize_model_id


def test_locates_the_three_artifacts_of_a_nested_model_dir(models_root):
    touch_output(models_root / "team-a" / "job-17", stem="intent")
    paths = locate(models_root, "team-a/job-17")
    assert paths.model_id == "team-a/job-17"
    assert paths.stem == "intent"
    assert paths.adapter_dir == (models_root / "team-a/job-17/intent.lora").resolve()
    assert paths.head_file.name == "intent.head.pt"
    assert paths.labels_file.name == "intent.head.pt.pkl"
    assert paths.adapter_config == (models_root / "team-a/job-17/intent.lora/adapter_config.json").resolve()
    assert paths.adapter_weights_name == "adapter_model.safetensors"


def test_the_adapter_weights_fall_back_to_the_bin_and_missing_ones_are_named(models_root):
    directory = touch_output(models_root / "job")
    (directory / "m.lora" / "adapter_model.safetensors").rename(directory / "m.lora" / "adapter_model.bin")
    assert locate(models_root, "job").adapter_weights_name == "adapter_model.bin"
    (directory / "m.lora" / "adapter_model.bin").unlink()
    with pytest.raises(InvalidModel, match="job/m.lora holds neither adapter_model.safetensors nor adapter_model.bin"):
        locate(models_root, "job")
    (directory / "m.lora" / "adapter_config.json").unlink()
    with pytest.raises(InvalidModel, match="job/m.lora/adapter_config.json is missing"):
        locate(models_root, "job")


@pytest.mark.parametrize("spelling", ["team-a//job-17", "./team-a/job-17", "team-a/job-17/", "team-a/./job-17"])
def test_equivalent_spellings_give_one_model_id(models_root, spelling):
    touch_output(models_root / "team-a" / "job-17")
    assert locate(models_root, normalize_model_id(spelling, "model_dir")).model_id == "team-a/job-17"


@pytest.mark.parametrize(
    "model_dir",
    ["../x", "/etc", "/etc/passwd", "a/../../x", "a/../b", "..", ".", "", "   ", "~/x", "a\\..\\b", "a\x00b", 17, None],
)
def test_traversal_absolute_and_malformed_paths_are_invalid_requests(models_root, model_dir):
    with pytest.raises(InvalidRequest):
        locate(models_root, normalize_model_id(model_dir, "model_dir"))


def test_a_symlink_out_of_the_root_is_refused(models_root, tmp_path):
    outside = touch_output(tmp_path / "outside")
    os.symlink(outside, models_root / "escape")
    with pytest.raises(InvalidRequest, match="outside the models root"):
        locate(models_root, "escape")


def test_an_artifact_symlinked_out_of_the_root_is_refused(models_root, tmp_path):
    directory = touch_output(models_root / "job")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    (directory / "m.head.pt").unlink()
    os.symlink(secret, directory / "m.head.pt")
    with pytest.raises(InvalidModel, match="job/m.head.pt links outside the models root"):
        locate(models_root, "job")


def test_a_symlink_that_stays_inside_the_root_is_followed(models_root):
    touch_output(models_root / "real")
    os.symlink(models_root / "real", models_root / "alias")
    assert locate(models_root, "alias").stem == "m"


def test_a_missing_directory_is_model_not_found(models_root):
    with pytest.raises(ModelNotFound, match="nope"):
        locate(models_root, "nope")


def test_a_file_is_not_a_model_dir(models_root):
    (models_root / "file").write_text("x")
    with pytest.raises(ModelNotFound):
        locate(models_root, "file")


def test_no_head_file_names_what_was_found(models_root):
    (models_root / "job").mkdir()
    (models_root / "job" / "readme.txt").write_text("x")
    with pytest.raises(InvalidModel, match=r"no \*\.head\.pt.*readme\.txt"):
        locate(models_root, "job")


def test_two_stems_are_refused_naming_both(models_root):
    touch_output(models_root / "job", stem="first")
    touch_output(models_root / "job", stem="second")
    with pytest.raises(InvalidModel, match="first.head.pt.*second.head.pt"):
        locate(models_root, "job")


@pytest.mark.parametrize("missing", ["m.lora", "m.head.pt.pkl"])
def test_a_missing_sibling_artifact_is_named(models_root, missing):
    directory = touch_output(models_root / "job")
    target = directory / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(InvalidModel, match=missing.replace(".", r"\.")):
        locate(models_root, "job")


def test_listing_finds_valid_outputs_at_any_depth_and_skips_broken_ones(models_root, tmp_path):
    touch_output(models_root / "a")
    touch_output(models_root / "team" / "b")
    touch_output(models_root / "broken", stem="x")
    touch_output(models_root / "broken", stem="y")  # two stems: not a valid output
    (models_root / "empty").mkdir()
    os.symlink(touch_output(tmp_path / "outside"), models_root / "escape")
    assert list_training_outputs(models_root) == ["a", "team/b"]


def test_normalize_keeps_unicode_names():
    assert normalize_model_id("团队/任务-1") == "团队/任务-1"
