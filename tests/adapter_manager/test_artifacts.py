"""Every variant of training-outputs.md is accepted (and computes the reference); everything else is
refused with the contract's code and a message naming the file and the problem."""

from __future__ import annotations

import collections
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from lora_core.errors import CapacityExceeded, InvalidModel, InvalidRequest, ModelNotFound
from conftest import assert_matches_reference
from testkit.edge import load_as_client
from testkit.factories import OutputSpec, make_tiny_base, make_training_output

TEXTS = ["baba dede fifi", "类别 好坏", "", "kaka lili mumu nunu popo rara sasa tutu vava zaza " * 3]


# ------------------------------------------------------------------------------------------- accepted

ACCEPTED = {
    "safetensors, linear head with classifier. prefix, label list": OutputSpec(),
    "adapter_model.bin": OutputSpec(weights_format="bin"),
    "linear head without bias or prefix": OutputSpec(head_bias=False, head_prefix=""),
    "linear head with head. prefix": OutputSpec(head_prefix="head."),
    "two-layer head": OutputSpec(head_layout="two-layer", num_labels=4),
    "two-layer head, no prefix": OutputSpec(head_layout="two-layer", head_prefix=""),
    "wrapped state dict, cls pooling": OutputSpec(pooling="cls"),
    "wrapped state dict, mean pooling": OutputSpec(pooling="mean", num_labels=2),
    "label tuple": OutputSpec(labels_format="tuple"),
    "label dict index to label": OutputSpec(labels_format="index_to_label"),
    "label dict label to index": OutputSpec(labels_format="label_to_index"),
    "integer labels": OutputSpec(label_names=(3, 1, 2)),
    "rsLoRA": OutputSpec(use_rslora=True, rank=16, alpha=4),
    "rank and alpha patterns": OutputSpec(
        rank=4, target_modules=("query", "value", "key"), rank_pattern={"key": 2}, alpha_pattern={"value": 32}
    ),
    "every Linear targeted": OutputSpec(rank=2, target_modules=("query", "key", "value", "dense")),
}


@pytest.mark.parametrize("spec", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_variant_loads_and_matches_the_reference(engine, reference, models_root, base_dir, spec):
    out = make_training_output(models_root, "job", base_dir, spec)
    result = engine.load("job", max_length=16)
    assert result.changed and result.model_id == "job"
    assert_matches_reference(engine, reference, "job", out, TEXTS, max_length=16)


def test_integer_labels_become_strings(engine, models_root, base_dir):
    make_training_output(models_root, "job", base_dir, OutputSpec(label_names=(3, 1, 2)))
    assert engine.load("job").adapter.labels == ("3", "1", "2")


def test_label_to_index_dict_is_put_in_index_order(engine, models_root, base_dir):
    out = make_training_output(models_root, "job", base_dir, OutputSpec())
    write_labels(out, {"乙": 1, "丙": 2, "甲": 0})
    assert engine.load("job").adapter.labels == ("甲", "乙", "丙")


def test_an_ordered_dict_of_labels_is_accepted(engine, models_root, base_dir):
    out = make_training_output(models_root, "job", base_dir, OutputSpec(num_labels=2))
    write_labels(out, collections.OrderedDict([(1, "b"), (0, "a")]))
    assert engine.load("job").adapter.labels == ("a", "b")


def test_an_adapter_saved_from_a_model_with_a_task_prefix_is_mapped(engine, reference, models_root, base_dir):
    """Keys like base_model.model.bert.encoder... (trained on a *ForSequenceClassification) still fit."""
    out = make_training_output(models_root, "job", base_dir, OutputSpec())
    pristine = shutil.copytree(out, models_root.parent / "pristine")  # what PEFT itself can load
    weights = out / "model.lora" / "adapter_model.safetensors"
    state = load_file(str(weights))
    save_file({k.replace("base_model.model.", "base_model.model.bert."): v for k, v in state.items()}, str(weights))
    engine.load("job")
    assert_matches_reference(engine, reference, "job", pristine, TEXTS)


# ------------------------------------------------------------------------------------------- refused


def write_labels(out: Path, obj) -> None:
    with (out / "model.head.pt.pkl").open("wb") as handle:
        pickle.dump(obj, handle)


def edit_config(out: Path, **changes) -> None:
    path = out / "model.lora" / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture
def output(models_root, base_dir) -> Path:
    return make_training_output(models_root, "job", base_dir, OutputSpec())


def refused(engine, match: str, error=InvalidModel):
    with pytest.raises(error, match=match) as caught:
        engine.load("job")
    assert caught.value.code == error.code
    return caught.value


@pytest.mark.parametrize(
    "remove, named",
    [
        ("model.lora/adapter_config.json", "adapter_config.json is missing"),
        ("model.lora/adapter_model.safetensors", "neither adapter_model.safetensors nor adapter_model.bin"),
        ("model.lora", "adapter directory model.lora is missing"),
        ("model.head.pt", r"no \*.head.pt"),
        ("model.head.pt.pkl", "model.head.pt.pkl is missing"),
    ],
)
def test_a_missing_file_is_named(engine, output, remove, named):
    target = output / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    refused(engine, named)


def test_two_stems_are_refused(engine, output, models_root, base_dir):
    make_training_output(models_root, "job", base_dir, OutputSpec(stem="other"))
    refused(engine, "model.head.pt.*other.head.pt")


def test_head_and_label_count_mismatch(engine, output):
    write_labels(output, ["a", "b"])
    refused(engine, "3 outputs but the label map model.head.pt.pkl has 2 labels")


@pytest.mark.parametrize("layout", ["linear", "two-layer"])
def test_head_with_the_wrong_hidden_size(engine, models_root, base_dir, layout):
    out = make_training_output(models_root, "job", base_dir, OutputSpec(head_layout=layout))
    spec = OutputSpec(head_layout=layout)
    from testkit.factories import head_object

    torch.save(head_object(spec, hidden=48), out / "model.head.pt")
    refused(engine, r"job/model.head.pt: .*(hidden size|\[H', 32\])")


def test_lora_shapes_that_do_not_fit_the_base(engine, models_root, tmp_path):
    wider_base = make_tiny_base(tmp_path / "wider", hidden=48)
    make_training_output(models_root, "job", wider_base, OutputSpec())
    refused(
        engine, r"adapter_model.safetensors: .*query LoRA shapes A\(4, 48\).*do not fit the base layer \(32 -> 32\)"
    )


def test_a_target_module_the_base_does_not_have(engine, output):
    weights = output / "model.lora" / "adapter_model.safetensors"
    state = load_file(str(weights))
    save_file({k.replace(".query.", ".questions."): v for k, v in state.items()}, str(weights))
    refused(engine, "questions is not a Linear layer of the base model")


def test_rank_disagreeing_with_the_config(engine, output):
    edit_config(output, r=5)
    refused(engine, "has rank 4 but adapter_config.json says 5")


def test_a_non_lora_peft_type(engine, models_root, base_dir):
    out = make_training_output(models_root, "job", base_dir, OutputSpec())
    shutil.rmtree(out / "model.lora")
    ia3 = get_peft_model(
        AutoModel.from_pretrained(str(base_dir)), IA3Config(target_modules=["query", "value"], feedforward_modules=[])
    )
    ia3.save_pretrained(str(out / "model.lora"))
    refused(engine, "peft_type is 'IA3'; only LORA adapters are served")


def test_a_dora_adapter(engine, models_root, base_dir):
    out = make_training_output(models_root, "job", base_dir, OutputSpec())
    shutil.rmtree(out / "model.lora")
    dora = get_peft_model(
        AutoModel.from_pretrained(str(base_dir)), LoraConfig(r=4, target_modules=["query"], use_dora=True)
    )
    dora.save_pretrained(str(out / "model.lora"))
    refused(engine, "DoRA adapters are not supported")


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"bias": "all"}, "only bias='none'"),
        ({"lora_bias": True}, "lora_bias"),
        ({"modules_to_save": ["classifier"]}, "modules_to_save"),
        ({"fan_in_fan_out": True}, "fan_in_fan_out"),
        ({"r": 0}, "r must be a positive integer"),
        ({"lora_alpha": "big"}, "lora_alpha must be a number"),
        ({"peft_type": None}, "peft_type is None"),
    ],
)
def test_unsupported_adapter_configs(engine, output, changes, named):
    edit_config(output, **changes)
    refused(engine, named)


def test_adapter_config_that_is_not_json(engine, output):
    (output / "model.lora" / "adapter_config.json").write_text("{not json")
    refused(engine, "adapter_config.json is not valid JSON")


def test_a_tensor_that_is_not_lora(engine, output):
    weights = output / "model.lora" / "adapter_model.safetensors"
    state = load_file(str(weights))
    state["base_model.model.encoder.layer.0.attention.self.query.weight"] = torch.zeros(32, 32)
    save_file(state, str(weights))
    refused(engine, "unexpected tensor .*query.weight")


def test_a_lora_a_without_its_b(engine, output):
    weights = output / "model.lora" / "adapter_model.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items() if "layer.0.attention.self.query.lora_B" not in k}
    save_file(state, str(weights))
    refused(engine, "needs both lora_A and lora_B")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors(engine, output, damage):
    weights = output / "model.lora" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(512), "empty": b""}[damage])
    refused(engine, "adapter_model.safetensors cannot be read safely")


def test_corrupt_bin_weights(engine, models_root, base_dir):
    out = make_training_output(models_root, "job", base_dir, OutputSpec(weights_format="bin"))
    weights = out / "model.lora" / "adapter_model.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    refused(engine, "adapter_model.bin cannot be read safely")


def test_nan_in_the_adapter(engine, output):
    weights = output / "model.lora" / "adapter_model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if k.endswith("lora_B.weight"))
    state[key][0, 0] = float("nan")
    save_file(state, str(weights))
    refused(engine, "NaN or infinite")


class WritesAFile:
    """A pickle payload that would create a file if it were ever called."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class RunsAShellCommand:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [WritesAFile, RunsAShellCommand])
def test_a_label_pickle_naming_a_global_is_refused_without_running(engine, output, tmp_path, payload):
    marker = tmp_path / "pwned"
    write_labels(output, ["a", payload(marker), "c"])
    refused(engine, r"model.head.pt.pkl is not an allowed label map: names the global (builtins|io)?\.?")
    assert not marker.exists()


def test_a_pickled_class_instance_is_refused(engine, output):
    write_labels(output, [collections.Counter("ab"), "b", "c"])
    refused(engine, "names the global collections.Counter")


def test_a_numpy_label_map_is_refused(engine, output):
    import numpy as np

    write_labels(output, {"a": np.int64(0), "b": np.int64(1), "c": np.int64(2)})
    refused(engine, "names the global numpy")


@pytest.mark.parametrize(
    "labels, named",
    [
        (["a", "a", "b"], "labels must be unique; repeated: \\['a'\\]"),
        ({0: "a", 1: "b", 3: "c"}, "must map indices 0..2"),
        ({"a": 0, "b": 2, "c": 3}, "must map indices 0..2"),
        ({0: 1, 1: 2, 2: 0}, "ambiguous"),
        (["a", 1.5, "c"], "strings or integers, got float"),
        (["a", None, "c"], "strings or integers, got NoneType"),
        (["a", True, "c"], "strings or integers, got bool"),
        ([], "holds no labels"),
        ("abc", "must hold a non-empty list, tuple or dict, got str"),
    ],
)
def test_malformed_label_maps(engine, output, labels, named):
    write_labels(output, labels)
    refused(engine, named)


def test_a_truncated_label_pickle(engine, output):
    path = output / "model.head.pt.pkl"
    path.write_bytes(path.read_bytes()[:-3])
    refused(engine, "model.head.pt.pkl is not an allowed label map")


def test_a_head_saved_as_a_whole_module_is_refused_without_running(engine, output):
    torch.save(torch.nn.Linear(32, 3), output / "model.head.pt")
    refused(engine, "model.head.pt cannot be read safely")


@pytest.mark.parametrize(
    "head, named",
    [
        (
            {"classifier.weight": torch.zeros(3, 32), "classifier.extra": torch.zeros(3)},
            "match no accepted head layout",
        ),
        ({"weight": torch.zeros(3, 32), "bias": torch.zeros(4)}, r"output bias must be \[3\]"),
        ({"weight": torch.zeros(3, 32, dtype=torch.int64)}, "must be finite floats"),
        ({"weight": torch.full((3, 32), float("inf"))}, "must be finite floats"),
        ({"dense.weight": torch.zeros(8, 32), "out_proj.weight": torch.zeros(3, 8)}, "match no accepted head layout"),
        (
            {
                "dense.weight": torch.zeros(8, 32),
                "dense.bias": torch.zeros(8),
                "out_proj.weight": torch.zeros(3, 9),
                "out_proj.bias": torch.zeros(3),
            },
            r"out_proj.weight is \[3, 9\]; expected \[L, 8\]",
        ),
        ({"state_dict": {"weight": torch.zeros(3, 32)}, "pooling": "max"}, "pooling must be one of"),
        ({"state_dict": {"weight": torch.zeros(3, 32)}, "dropout": 0.1}, "unexpected keys \\['dropout'\\]"),
        ({}, "non-empty dict of tensors"),
        ([torch.zeros(3, 32)], "non-empty dict of tensors"),
    ],
)
def test_malformed_heads(engine, output, head, named):
    torch.save(head, output / "model.head.pt")
    refused(engine, named)


def test_traversal_is_an_invalid_request(engine):
    for model_dir in ("../x", "/etc", "a/../../etc"):
        with pytest.raises(InvalidRequest):
            engine.load(model_dir)


def test_a_missing_directory_is_model_not_found(engine):
    with pytest.raises(ModelNotFound):
        engine.load("missing")


def test_capacity_names_both_numbers(engine, base_dir, models_root, tmp_path):
    from adapter_manager.manifest import AdapterManifest
    from adapter_manager.service import AdapterService

    service = AdapterService(engine, AdapterManifest(tmp_path / "state"), "cpu-0", 100_000, max_adapters=2)
    for name in ("a", "b", "c"):
        make_training_output(models_root, name, base_dir, OutputSpec())
    service.control({"op": "load", "model_dir": "a"})
    service.control({"op": "load", "model_dir": "b"})
    with pytest.raises(CapacityExceeded, match="2 adapters are loaded and the maximum is 2"):
        service.control({"op": "load", "model_dir": "c"})
    assert service.load_failures == {"capacity_exceeded": 1}  # lora_load_failures_total{code} in model.py
    service.control({"op": "load", "model_dir": "b", "reload": True})  # a reload needs no extra slot
    assert sorted(a.model_id for a in engine.resident()) == ["a", "b"]  # the refused one left nothing behind
    assert sorted(service.manifest.read().entries) == ["a", "b"]


@pytest.mark.parametrize("max_length", [0, 1, 513, -5, "64", 3.5, True])
def test_max_length_out_of_bounds_is_an_invalid_request(engine, output, max_length):
    with pytest.raises(InvalidRequest, match="max_length"):
        load_as_client(engine, "job", max_length=max_length)


def test_refusals_leave_what_is_loaded_untouched(engine, models_root, base_dir):
    make_training_output(models_root, "good", base_dir, OutputSpec(seed=3))
    engine.load("good")
    before = engine.classify(TEXTS, ["good"] * len(TEXTS))
    wrapped_before = set(engine._wrappers)

    bad = make_training_output(models_root, "job", base_dir, OutputSpec(target_modules=("key", "dense")))
    write_labels(bad, ["only one"])
    with pytest.raises(InvalidModel):
        engine.load("job")

    assert [a.model_id for a in engine.resident()] == ["good"]
    assert set(engine._wrappers) == wrapped_before  # the refused adapter never touched the base model
    after = engine.classify(TEXTS, ["good"] * len(TEXTS))
    for old, new in zip(before, after):
        assert (old.probabilities == new.probabilities).all()
