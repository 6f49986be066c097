"""Hostile and damaged training outputs, at the engine and service level (no Triton).

Every case is refused with the contract's code (`invalid_model` for the files, `invalid_request` for a bad
`model_dir`), nothing in the files runs, and a model loaded before the attempt keeps serving bit for bit
the same probabilities. test_artifacts.py / test_layout.py hold the basic refusals; this file adds the
attacks and the damage a production models root can see.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_core.errors import AdapterError, InvalidModel, InvalidRequest, ModelNotFound
from adapter_manager.outputs_index import list_training_outputs
from testkit.edge import load_as_client
from testkit.factories import OutputSpec, make_training_output

TEXTS = ["baba dede fifi", "类别 好坏", "", "kaka lili mumu nunu " * 5]
GUARD = "guard"  # the model that is loaded before every refusal and must not change


class Guard:
    """A loaded model whose results, wrappers and residency are checked after every refusal."""

    def __init__(self, engine) -> None:
        self.engine = engine
        engine.load(GUARD)
        self.before = [r.probabilities.copy() for r in engine.classify(TEXTS, [GUARD] * len(TEXTS))]
        self.wrapped = set(engine._wrappers)
        self.refusals = 0

    def refuse(self, model_dir, error: type[AdapterError], match: str = "", **load_args) -> AdapterError:
        with pytest.raises(error, match=match) as caught:
            load_as_client(self.engine, model_dir, **load_args)
        assert type(caught.value) is error and caught.value.code == error.code
        assert "Traceback" not in caught.value.message and "/tmp/" not in caught.value.message
        self.refusals += 1
        self.assert_undisturbed()
        return caught.value

    def assert_undisturbed(self, extra: tuple[str, ...] = ()) -> None:
        assert sorted(a.model_id for a in self.engine.resident()) == sorted((GUARD, *extra))
        assert set(self.engine._wrappers) == self.wrapped  # a refused adapter never rewires the base
        after = self.engine.classify(TEXTS, [GUARD] * len(TEXTS))
        for old, new in zip(self.before, after):
            assert np.array_equal(old, new.probabilities)  # bit for bit


@pytest.fixture
def guard(engine, models_root, base_dir) -> Guard:
    # The guard targets every Linear, so a refused adapter could not hide behind a wrapper it adds.
    make_training_output(
        models_root, GUARD, base_dir, OutputSpec(stem="g", seed=3, target_modules=("query", "key", "value", "dense"))
    )
    return Guard(engine)


@pytest.fixture
def job(models_root, base_dir) -> Path:
    return make_training_output(models_root, "job", base_dir, OutputSpec(seed=5))


@pytest.fixture
def bin_job(models_root, base_dir) -> Path:
    return make_training_output(models_root, "job", base_dir, OutputSpec(seed=5, weights_format="bin"))


def weights_of(out: Path) -> Path:
    return out / "model.lora" / "adapter_model.safetensors"


def edit_weights(out: Path, edit) -> None:
    path = weights_of(out)
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def lora_key(state: dict, module: str = "layer.0.attention.self.query", part: str = "lora_A") -> str:
    return next(k for k in state if module in k and part in k)


# ------------------------------------------------------------------------------ payloads that would run


class Payload:
    """A pickle payload that would leave `marker` behind if it were ever called."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return (open, (str(self.marker), "w"))
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "exec":
            return (exec, (f"open({str(self.marker)!r}, 'w').close()",))
        import subprocess

        return (subprocess.call, (["touch", str(self.marker)],))


HOW = ["open", "os.system", "exec", "subprocess"]


def handmade_pickles(marker: Path) -> dict[str, bytes]:
    """Opcode-level payloads that do not go through __reduce__: protocol-0 GLOBAL/INST, STACK_GLOBAL, py2 names."""
    cmd = f"touch {marker}".encode()
    return {
        "GLOBAL+REDUCE (protocol 0)": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        "INST (protocol 0)": b"(S'" + cmd + b"'\nios\nsystem\n.",
        "py2 name __builtin__.eval": b'c__builtin__\neval\n(S\'__import__("os").system("' + cmd + b"\")'\ntR.",
        "STACK_GLOBAL (protocol 4)": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.",
        "payload behind an allowed OrderedDict": (
            b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R\x8c\x01a"
            b"\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85Rs."
        ),
        "persistent id": b"\x80\x04\x8c\x03pidQ.",
    }


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("where", ["top level", "dict value", "dict key"])
def test_label_pickle_payloads_never_run(guard, job, tmp_path, how, where):
    marker = tmp_path / "pwned"
    payload = Payload(marker, how)
    obj = {"top level": payload, "dict value": {0: "a", 1: payload, 2: "c"}, "dict key": {payload: 0}}[where]
    (job / "model.head.pt.pkl").write_bytes(pickle.dumps(obj))
    guard.refuse("job", InvalidModel, r"job/model.head.pt.pkl is not an allowed label map: names the global")
    assert not marker.exists()


@pytest.mark.parametrize("name", list(handmade_pickles(Path("x"))))
def test_handmade_label_pickles_never_run(guard, job, tmp_path, name):
    marker = tmp_path / "pwned"
    (job / "model.head.pt.pkl").write_bytes(handmade_pickles(marker)[name])
    guard.refuse("job", InvalidModel, "job/model.head.pt.pkl is not an allowed label map")
    assert not marker.exists()


@pytest.mark.parametrize("how", HOW)
def test_head_pickle_payloads_never_run(guard, job, tmp_path, how):
    marker = tmp_path / "pwned"
    torch.save({"classifier.weight": Payload(marker, how)}, job / "model.head.pt")
    guard.refuse("job", InvalidModel, "job/model.head.pt cannot be read safely")
    assert not marker.exists()


class EvilHead(torch.nn.Linear):
    """A whole module whose unpickling would write the marker (torch.save(module) of a custom class)."""

    marker = ""

    def __setstate__(self, state):
        Path(self.marker).write_text("ran")
        super().__setstate__(state)


def test_a_head_saved_as_a_custom_module_never_runs(guard, job, tmp_path):
    marker = tmp_path / "pwned"
    EvilHead.marker = str(marker)
    torch.save(EvilHead(32, 3), job / "model.head.pt")
    guard.refuse("job", InvalidModel, "job/model.head.pt cannot be read safely")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["GLOBAL+REDUCE (protocol 0)", "STACK_GLOBAL (protocol 4)"])
def test_a_head_that_is_a_raw_pickle_never_runs(guard, job, tmp_path, name):
    marker = tmp_path / "pwned"
    (job / "model.head.pt").write_bytes(handmade_pickles(marker)[name])
    guard.refuse("job", InvalidModel, "job/model.head.pt cannot be read safely")
    assert not marker.exists()


@pytest.mark.parametrize("how", HOW)
def test_bin_adapter_weights_payloads_never_run(guard, bin_job, tmp_path, how):
    marker = tmp_path / "pwned"
    path = bin_job / "model.lora" / "adapter_model.bin"
    state = torch.load(path, weights_only=True)
    state[next(iter(state))] = Payload(marker, how)
    torch.save(state, path)
    guard.refuse("job", InvalidModel, "job/model.lora/adapter_model.bin cannot be read safely")
    assert not marker.exists()


def test_bin_adapter_weights_that_are_a_raw_pickle_never_run(guard, bin_job, tmp_path):
    marker = tmp_path / "pwned"
    (bin_job / "model.lora" / "adapter_model.bin").write_bytes(handmade_pickles(marker)["INST (protocol 0)"])
    guard.refuse("job", InvalidModel, "adapter_model.bin cannot be read safely")
    assert not marker.exists()


# ---------------------------------------------------------------------------------- damaged files


def _safetensors_damage(data: bytes) -> dict[str, bytes]:
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    name = next(k for k in header if k != "__metadata__")
    wrong_offsets = dict(header, **{name: dict(header[name], data_offsets=[0, 10**9])})
    wrong_dtype = dict(header, **{name: dict(header[name], dtype="F64")})  # claims twice the bytes it has

    def with_header(h: dict) -> bytes:
        raw = json.dumps(h).encode()
        return struct.pack("<Q", len(raw)) + raw + data[8 + header_len :]

    return {
        "cut in half": data[: len(data) // 2],
        "last byte missing": data[:-1],
        "only the length prefix": data[:8],
        "shorter than the length prefix": data[:5],
        "header length 2**63": struct.pack("<Q", 2**63) + data[8:],
        "header length past the end": struct.pack("<Q", len(data)) + data[8:],
        "header garbage": data[:8] + b"\xff" * header_len + data[8 + header_len :],
        "header not an object": with_header(["a"]),  # type: ignore[arg-type]
        "offsets past the end": with_header(wrong_offsets),
        "dtype disagreeing with its bytes": with_header(wrong_dtype),
        "empty": b"",
        "zeros": bytes(len(data)),
    }


SAFETENSORS_DAMAGE = [
    "cut in half",
    "last byte missing",
    "only the length prefix",
    "shorter than the length prefix",
    "header length 2**63",
    "header length past the end",
    "header garbage",
    "header not an object",
    "offsets past the end",
    "dtype disagreeing with its bytes",
    "empty",
    "zeros",
]


@pytest.mark.parametrize("damage", SAFETENSORS_DAMAGE)
def test_damaged_safetensors(guard, job, damage):
    path = weights_of(job)
    path.write_bytes(_safetensors_damage(path.read_bytes())[damage])
    guard.refuse("job", InvalidModel, "job/model.lora/adapter_model.safetensors cannot be read safely")


@pytest.mark.parametrize(
    "file, named",
    [
        ("model.head.pt", "job/model.head.pt cannot be read safely"),
        ("model.head.pt.pkl", "job/model.head.pt.pkl is not an allowed label map"),
        ("model.lora/adapter_config.json", "job/model.lora/adapter_config.json is not valid JSON"),
        ("model.lora/adapter_model.safetensors", "adapter_model.safetensors cannot be read safely"),
    ],
)
@pytest.mark.parametrize("content", ["empty", "garbage", "truncated"])
def test_empty_garbage_and_truncated_files(guard, job, file, named, content):
    path = job / file
    data = path.read_bytes()
    path.write_bytes(
        {"empty": b"", "garbage": os.urandom(64) + b"\xff", "truncated": data[: len(data) * 2 // 3]}[content]
    )
    guard.refuse("job", InvalidModel, named)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04" + bytes(40)])
def test_empty_and_fake_zip_bin_weights(guard, bin_job, content):
    (bin_job / "model.lora" / "adapter_model.bin").write_bytes(content)
    guard.refuse("job", InvalidModel, "adapter_model.bin cannot be read safely")


def test_adapter_config_nested_too_deeply(guard, job):
    (job / "model.lora" / "adapter_config.json").write_text("[" * 200_000 + "]" * 200_000)
    guard.refuse("job", InvalidModel, "adapter_config.json is not valid JSON: nested too deeply")


@pytest.mark.parametrize("pattern", ["rank_pattern", "alpha_pattern"])
def test_a_pattern_key_that_is_not_a_regular_expression(guard, job, pattern):
    path = job / "model.lora" / "adapter_config.json"
    config = json.loads(path.read_text())
    config[pattern] = {"query(": 2}
    path.write_text(json.dumps(config))
    guard.refuse("job", InvalidModel, f"adapter_config.json: {pattern} key 'query\\(' is not a valid pattern")


def test_a_label_pickle_nested_too_deeply(guard, job):
    (job / "model.head.pt.pkl").write_bytes(b"\x80\x04" + b"]" * 200_000 + b".")
    guard.refuse("job", InvalidModel, "model.head.pt.pkl")


def test_a_huge_integer_label(guard, job):
    (job / "model.head.pt.pkl").write_bytes(pickle.dumps([10**5000, 1, 2]))
    guard.refuse("job", InvalidModel, "job/model.head.pt.pkl: an integer label has 16610 bits")


# ----------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.bool])
def test_lora_weights_that_are_not_floats(guard, job, dtype):
    edit_weights(job, lambda s: s.update({(k := lora_key(s)): s[k].to(dtype)}))
    guard.refuse("job", InvalidModel, r"query.lora_A must be a 2-D float tensor, got (int|uint|bool)")


def test_complex_lora_weights_in_a_bin(guard, bin_job):
    path = bin_job / "model.lora" / "adapter_model.bin"
    state = torch.load(path, weights_only=True)
    key = lora_key(state, part="lora_B")
    state[key] = state[key].to(torch.complex64)
    torch.save(state, path)
    guard.refuse("job", InvalidModel, "lora_B must be a 2-D float tensor, got complex64")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.uint8])
def test_head_weights_that_are_not_floats(guard, job, dtype):
    torch.save({"weight": torch.ones(3, 32).to(dtype), "bias": torch.zeros(3)}, job / "model.head.pt")
    guard.refuse("job", InvalidModel, "job/model.head.pt: weight must be finite floats")


@pytest.mark.parametrize("kind", ["meta", "sparse", "quantized"])
def test_tensors_without_plain_data(guard, bin_job, kind):
    """weights_only lets meta, sparse and quantized tensors through; none of them can be served."""

    def odd(t: torch.Tensor) -> torch.Tensor:
        if kind == "meta":
            return torch.empty_like(t, device="meta")
        if kind == "sparse":
            return t.to_sparse()
        return torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)

    torch.save({"weight": odd(torch.ones(3, 32)), "bias": torch.zeros(3)}, bin_job / "model.head.pt")
    guard.refuse("job", InvalidModel, "job/model.head.pt")
    torch.save({"weight": torch.ones(3, 32)}, bin_job / "model.head.pt")
    path = bin_job / "model.lora" / "adapter_model.bin"
    state = torch.load(path, weights_only=True)
    key = lora_key(state)
    state[key] = odd(state[key])
    torch.save(state, path)
    guard.refuse("job", InvalidModel, "job/model.lora/adapter_model.bin")


def test_half_precision_and_double_weights_are_accepted_as_float32(guard, job, reference, tmp_path):
    """Not a refusal: fp16 / bf16 / fp64 tensors are floats; they are converted to float32 on load."""
    edit_weights(
        job, lambda s: s.update({k: v.to(torch.bfloat16 if "query" in k else torch.float16) for k, v in s.items()})
    )
    pristine = shutil.copytree(job, tmp_path / "pristine")  # float32 head: what the reference can compute with
    head = torch.load(job / "model.head.pt", weights_only=True)
    torch.save({k: v.double() for k, v in head.items()}, job / "model.head.pt")
    guard.engine.load("job")
    guard.assert_undisturbed(extra=("job",))
    expected = reference.probabilities(pristine, TEXTS)  # peft computes with the stored half-precision values
    for got, want in zip(guard.engine.classify(TEXTS, ["job"] * len(TEXTS)), expected):
        np.testing.assert_allclose(got.probabilities, want, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------------------- shapes


SHAPES = {
    "A and B ranks disagree": (
        lambda s: s.update({(k := lora_key(s, part="lora_B")): s[k][:, :3].contiguous()}),
        r"query LoRA shapes A\(4, 32\) B\(32, 3\)",
    ),
    "A with the wrong hidden size": (
        lambda s: s.update({lora_key(s): torch.zeros(4, 48)}),
        r"query LoRA shapes A\(4, 48\)",
    ),
    "B with the wrong output size": (
        lambda s: s.update({lora_key(s, part="lora_B"): torch.zeros(31, 4)}),
        r"B\(31, 4\) do not fit the base layer \(32 -> 32\)",
    ),
    "A and B swapped": (
        lambda s: s.update(
            {lora_key(s): s[lora_key(s, part="lora_B")].clone(), lora_key(s, part="lora_B"): s[lora_key(s)].clone()}
        ),
        r"query LoRA shapes A\(32, 4\) B\(4, 32\)",
    ),
    "A one-dimensional": (
        lambda s: s.update({(k := lora_key(s)): s[k].flatten().contiguous()}),
        r"query.lora_A must be a 2-D float tensor, got float32\[128\]",
    ),
    "B three-dimensional": (
        lambda s: s.update({(k := lora_key(s, part="lora_B")): s[k][None].contiguous()}),
        r"query.lora_B must be a 2-D float tensor, got float32\[1, 32, 4\]",
    ),
    "both ranks 2 while the config says 4": (
        lambda s: s.update(
            {
                lora_key(s): s[lora_key(s)][:2].contiguous(),
                lora_key(s, part="lora_B"): s[lora_key(s, part="lora_B")][:, :2].contiguous(),
            }
        ),
        "query has rank 2 but adapter_config.json says 4",
    ),
    "an empty rank": (
        lambda s: s.update({lora_key(s): torch.zeros(0, 32), lora_key(s, part="lora_B"): torch.zeros(32, 0)}),
        "has rank 0 but adapter_config.json says 4",
    ),
    "a LoRA pair on the pooler (not in the base)": (
        lambda s: s.update(
            {
                "base_model.model.classifier.lora_A.weight": torch.zeros(4, 32),
                "base_model.model.classifier.lora_B.weight": torch.zeros(3, 4),
            }
        ),
        "classifier is not a Linear layer of the base model",
    ),
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_lora_shapes_that_do_not_fit(guard, job, case):
    edit, named = SHAPES[case]
    edit_weights(job, edit)
    guard.refuse("job", InvalidModel, "job/model.lora/adapter_model.safetensors: .*" + named)


HEADS = {
    "linear head, hidden 31": (
        {"weight": torch.zeros(3, 31), "bias": torch.zeros(3)},
        r"weight is \[3, 31\]; its hidden size must equal the base's 32",
    ),
    "linear head, one-dimensional": (
        {"weight": torch.zeros(32)},
        r"output weight must be \[labels, hidden\], got \[32\]",
    ),
    "linear head, no outputs": (
        {"weight": torch.zeros(0, 32)},
        r"output weight must be \[labels, hidden\], got \[0, 32\]",
    ),
    "two-layer head, dense on hidden 33": (
        {
            "dense.weight": torch.zeros(8, 33),
            "dense.bias": torch.zeros(8),
            "out_proj.weight": torch.zeros(3, 8),
            "out_proj.bias": torch.zeros(3),
        },
        r"dense.weight is \[8, 33\]; expected \[H', 32\]",
    ),
    "two-layer head, dense bias of the wrong size": (
        {
            "dense.weight": torch.zeros(8, 32),
            "dense.bias": torch.zeros(7),
            "out_proj.weight": torch.zeros(3, 8),
            "out_proj.bias": torch.zeros(3),
        },
        r"dense.bias must be \[8\]",
    ),
    "linear head, 4 outputs for 3 labels": (
        {"weight": torch.zeros(4, 32), "bias": torch.zeros(4)},
        "has 4 outputs but the label map model.head.pt.pkl has 3 labels",
    ),
    "two-layer head, 2 outputs for 3 labels": (
        {
            "dense.weight": torch.zeros(8, 32),
            "dense.bias": torch.zeros(8),
            "out_proj.weight": torch.zeros(2, 8),
            "out_proj.bias": torch.zeros(2),
        },
        "has 2 outputs but the label map model.head.pt.pkl has 3 labels",
    ),
}


@pytest.mark.parametrize("case", list(HEADS))
def test_heads_that_do_not_fit(guard, job, case):
    head, named = HEADS[case]
    torch.save(head, job / "model.head.pt")
    guard.refuse("job", InvalidModel, "job(/|: the head )model.head.pt.*" + named)


# ----------------------------------------------------------------------------- NaN and infinities
# The contract says nothing about NaN or infinite weights; we refuse them at load time (they can only
# produce NaN probabilities) instead of serving results that do not sum to 1.


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("part", ["lora_A", "lora_B"])
def test_non_finite_lora_weights(guard, job, value, part):
    def edit(state):
        state[lora_key(state, "layer.1.attention.self.value", part)][-1, -1] = value

    edit_weights(job, edit)
    guard.refuse("job", InvalidModel, "layer.1.attention.self.value holds NaN or infinite values")


def test_lora_weights_that_overflow_once_scaled(guard, job):
    """Finite as stored, infinite once multiplied by lora_alpha / r: caught after scaling."""
    edit_weights(job, lambda s: s[lora_key(s, part="lora_B")].fill_(3e38))
    path = job / "model.lora" / "adapter_config.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), lora_alpha=64)))
    guard.refuse("job", InvalidModel, "NaN or infinite")


@pytest.mark.parametrize("key", ["dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"])
def test_non_finite_two_layer_head(guard, job, key):
    head = {
        "dense.weight": torch.zeros(8, 32),
        "dense.bias": torch.zeros(8),
        "out_proj.weight": torch.zeros(3, 8),
        "out_proj.bias": torch.zeros(3),
    }
    head[key].view(-1)[0] = float("nan")
    torch.save({"state_dict": head, "pooling": "mean"}, job / "model.head.pt")
    guard.refuse("job", InvalidModel, f"job/model.head.pt: {key} must be finite floats")


# ------------------------------------------------------------------------------ layout and paths


def test_two_stems_each_complete_or_not(guard, job, models_root, base_dir):
    shutil.copy(job / "model.head.pt", job / "Model.head.pt")  # differs only by case
    guard.refuse("job", InvalidModel, r"several models in one directory.*'Model.head.pt', 'model.head.pt'")
    (job / "Model.head.pt").unlink()
    make_training_output(models_root, "job", base_dir, OutputSpec(stem="second"))
    guard.refuse("job", InvalidModel, r"several models in one directory.*'model.head.pt', 'second.head.pt'")


@pytest.mark.parametrize(
    "model_dir, error, named",
    [
        ("../guard", InvalidRequest, "'..'"),
        ("guard/../../x", InvalidRequest, "'..'"),
        ("/etc", InvalidRequest, "relative to the models root"),
        ("//etc/passwd", InvalidRequest, "relative to the models root"),
        ("~root", InvalidRequest, "relative to the models root"),
        ("guard\x00/x", InvalidRequest, "control characters"),
        ("guard\n", InvalidRequest, "control characters"),
        ("..\\..\\etc", InvalidRequest, "backslashes"),
        ("%2e%2e/%2e%2e/etc", ModelNotFound, "does not exist"),  # JSON carries no URL encoding: a literal name
        ("%2e%2e", ModelNotFound, "does not exist"),
        ("．．/etc", ModelNotFound, "does not exist"),  # fullwidth dots are just characters
        ("a" * 300, InvalidRequest, "cannot be resolved: File name too long"),
        ("x" * 513, InvalidRequest, "the limit is 512"),
        ("guard/g.head.pt", ModelNotFound, "does not exist"),  # a file, not a directory
        ("guard/g.lora", InvalidModel, r"no \*.head.pt file found"),
    ],
)
def test_bad_model_dirs(guard, model_dir, error, named):
    guard.refuse(model_dir, error, named)


def test_symlinked_model_dirs(guard, models_root, tmp_path, base_dir):
    outside = make_training_output(tmp_path / "outside", "evil", base_dir, OutputSpec(seed=8))
    os.symlink(outside, models_root / "escape")
    os.symlink(tmp_path / "outside", models_root / "team")  # a symlink in the middle of the path
    os.symlink(models_root / "loop", models_root / "loop")
    os.symlink("ping", models_root / "pong")
    os.symlink("pong", models_root / "ping")
    os.symlink(models_root, models_root / "root")
    os.symlink("/", models_root / "slash")
    guard.refuse("escape", InvalidRequest, "resolves outside the models root")
    guard.refuse("team/evil", InvalidRequest, "resolves outside the models root")
    guard.refuse("slash/etc", InvalidRequest, "resolves outside the models root")
    guard.refuse("loop", InvalidRequest, "model_dir 'loop' cannot be resolved")
    guard.refuse("ping", InvalidRequest, "model_dir 'ping' cannot be resolved")
    guard.refuse("root", InvalidRequest, "is the models root itself")
    guard.refuse("root/..", InvalidRequest, "'..'")
    assert list_training_outputs(models_root) == [GUARD]  # none of them breaks or joins the listing


@pytest.mark.parametrize(
    "artifact",
    [
        "model.head.pt",
        "model.head.pt.pkl",
        "model.lora",
        "model.lora/adapter_config.json",
        "model.lora/adapter_model.safetensors",
    ],
)
def test_artifacts_symlinked_outside_the_root(guard, job, tmp_path, artifact):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = job / artifact
    stolen = outside / target.name
    shutil.move(target, stolen)  # the real, valid file: only its location is wrong
    os.symlink(stolen, target)
    guard.refuse("job", InvalidModel, f"job/{artifact} links outside the models root")


@pytest.mark.parametrize("artifact", ["model.head.pt", "model.head.pt.pkl", "model.lora"])
def test_artifacts_that_are_symlink_loops(guard, job, models_root, artifact):
    target = job / artifact
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.symlink(target.name, target)
    guard.refuse("job", InvalidModel, f"job/{artifact}")
    assert list_training_outputs(models_root) == [GUARD]  # the listing skips it instead of failing


@pytest.mark.parametrize("artifact", ["model.head.pt", "model.head.pt.pkl", "model.lora/adapter_config.json"])
def test_artifacts_that_are_directories(guard, job, artifact):
    target = job / artifact
    target.unlink()
    target.mkdir()
    guard.refuse("job", InvalidModel, f"{target.name} is missing")


def test_artifact_symlinks_that_stay_inside_the_root_are_followed(guard, job, models_root, reference, tmp_path):
    """Shared files elsewhere in the root are fine; messages still name them as the client knows them."""
    pristine = shutil.copytree(job, tmp_path / "pristine")
    shared = models_root / "shared"
    shared.mkdir()
    shutil.move(job / "model.head.pt.pkl", shared / "labels.pickle")
    os.symlink(shared / "labels.pickle", job / "model.head.pt.pkl")
    shutil.move(job / "model.lora", shared / "adapter-v1")  # a differently named directory
    os.symlink(shared / "adapter-v1", job / "model.lora")
    assert guard.engine.load("job").changed
    guard.assert_undisturbed(extra=("job",))
    for got, want in zip(guard.engine.classify(TEXTS, ["job"] * len(TEXTS)), reference.probabilities(pristine, TEXTS)):
        np.testing.assert_allclose(got.probabilities, want, atol=1e-4, rtol=0)

    guard.engine.remove("job")
    (shared / "labels.pickle").write_bytes(pickle.dumps(["a", "b"]))
    guard.refuse(
        "job", InvalidModel, "job: the head model.head.pt has 3 outputs but the label map model.head.pt.pkl has 2"
    )
    (shared / "adapter-v1" / "adapter_config.json").write_text("[")
    guard.refuse("job", InvalidModel, "job/model.lora/adapter_config.json is not valid JSON")


def test_the_weights_format_follows_the_name_not_the_symlink_target(guard, bin_job, models_root):
    """adapter_model.safetensors pointing at a pickle is read as safetensors (and refused), never unpickled."""
    lora = bin_job / "model.lora"
    shutil.move(lora / "adapter_model.bin", models_root / "weights.safetensors")
    os.symlink(models_root / "weights.safetensors", lora / "adapter_model.bin")
    assert guard.engine.load("job").changed  # a .bin under another name is still read as a .bin
    guard.engine.remove("job")
    (lora / "adapter_model.bin").unlink()
    os.symlink(models_root / "weights.safetensors", lora / "adapter_model.safetensors")
    guard.refuse("job", InvalidModel, "job/model.lora/adapter_model.safetensors cannot be read safely")
    (lora / "adapter_model.safetensors").rename(lora / "adapter_model.bin")  # the adapter is fine again
    save_file({"weight": torch.zeros(3, 32)}, str(models_root / "head.safetensors"))  # a dict of tensors...
    (bin_job / "model.head.pt").unlink()
    os.symlink(models_root / "head.safetensors", bin_job / "model.head.pt")  # ...but not a torch.save
    guard.refuse("job", InvalidModel, "job/model.head.pt cannot be read safely")


# ------------------------------------------------------------------ changed on disk while loaded


def _corrupt(out: Path, how: str) -> None:
    if how == "every file garbage":
        for path in out.rglob("*"):
            if path.is_file():
                path.write_bytes(os.urandom(100))
    elif how == "labels replaced by a payload":
        (out / "model.head.pt.pkl").write_bytes(handmade_pickles(out / "pwned")["INST (protocol 0)"])
    elif how == "head of another shape":
        torch.save({"weight": torch.zeros(5, 32)}, out / "model.head.pt")
    elif how == "weights truncated":
        path = weights_of(out)
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "a second stem appeared":
        shutil.copy(out / "model.head.pt", out / "other.head.pt")
    elif how == "directory deleted":
        shutil.rmtree(out)
    else:
        raise ValueError(how)


CORRUPTIONS = [
    "every file garbage",
    "labels replaced by a payload",
    "head of another shape",
    "weights truncated",
    "a second stem appeared",
    "directory deleted",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_loaded_model_survives_its_files_being_replaced(guard, job, how):
    engine = guard.engine
    first = engine.load("job")
    served = [r.probabilities.copy() for r in engine.classify(TEXTS, ["job"] * len(TEXTS))]
    _corrupt(job, how)

    def still_serving() -> None:
        guard.assert_undisturbed(extra=("job",))
        for old, new in zip(served, engine.classify(TEXTS, ["job"] * len(TEXTS))):
            assert np.array_equal(old, new.probabilities) and new.labels == first.adapter.labels

    still_serving()
    again = engine.load("job")  # idempotent load: answered from memory, the files are not even looked at
    assert again.changed is False and again.adapter is first.adapter
    with pytest.raises(ModelNotFound if how == "directory deleted" else InvalidModel, match="job"):
        engine.load("job", reload=True)
    still_serving()
    assert next(a for a in engine.resident() if a.model_id == "job") is first.adapter
    assert not (job / "pwned").exists()


# ------------------------------------------------------------------------ service (manifest) level


@pytest.fixture
def services(engine, base_dir, models_root, tmp_path):
    """Two serving instances over one manifest, as Triton runs them."""
    from adapter_manager import AdapterEngine
    from adapter_manager.manifest import AdapterManifest
    from adapter_manager.service import AdapterService

    other = AdapterEngine(base_dir, models_root, device="cpu", dtype="float32")
    state = tmp_path / "state"
    return [AdapterService(e, AdapterManifest(state), f"cpu-{i}", 100_000, 16) for i, e in enumerate((engine, other))]


def _service_probabilities(service, model_id: str) -> list[np.ndarray]:
    from adapter_manager.service import ClassifyRequest

    (answer,) = service.classify([ClassifyRequest(TEXTS, [model_id] * len(TEXTS))])
    assert not isinstance(answer, AdapterError), answer
    return [r.probabilities.copy() for r in answer]


@pytest.mark.parametrize("how", ["every file garbage", "head of another shape", "directory deleted"])
def test_a_failed_reload_keeps_the_old_version_on_every_instance(services, guard, job, how):
    a, b = services
    a.control({"op": "load", "model_dir": GUARD})
    a.control({"op": "load", "model_dir": "job"})
    b.sync()
    manifest_before = a.manifest.read().entries
    served = {s.instance: {m: _service_probabilities(s, m) for m in (GUARD, "job")} for s in services}
    _corrupt(job, how)

    error = ModelNotFound if how == "directory deleted" else InvalidModel
    with pytest.raises(error):
        a.control({"op": "load", "model_dir": "job", "reload": True})
    with pytest.raises(error):
        b.control({"op": "load", "model_dir": "job", "reload": True})
    assert (
        a.control({"op": "load", "model_dir": "job"})["changed"] is False
    )  # an idempotent load still answers from what is resident
    assert a.load_failures == b.load_failures == {error.code: 1}  # counted for the alert, by code

    assert a.manifest.read().entries == manifest_before  # nothing recorded: no instance reloads anything
    for service in services:
        service.sync()
        assert service.problems == {}
        for model_id in (GUARD, "job"):
            for old, new in zip(served[service.instance][model_id], _service_probabilities(service, model_id)):
                assert np.array_equal(old, new)


def test_refusals_through_the_service_leave_the_manifest_alone(services, guard, job, tmp_path):
    a, _ = services
    a.control({"op": "load", "model_dir": GUARD})
    before = a.manifest.read()
    (job / "model.head.pt.pkl").write_bytes(handmade_pickles(tmp_path / "pwned")["STACK_GLOBAL (protocol 4)"])
    for model_dir, error in (
        ("job", InvalidModel),
        ("../job", InvalidRequest),
        ("a" * 300, InvalidRequest),
        ("nope", ModelNotFound),
    ):
        with pytest.raises(error):
            a.control({"op": "load", "model_dir": model_dir})
    after = a.manifest.read()
    assert (after.generation, after.entries) == (before.generation, before.entries)
    assert not (tmp_path / "pwned").exists()
    # The listing checks the layout only (reading every file on each listing would be too slow), so the
    # hostile output is listed as unloaded: loading it is what refuses it.
    listed = {m["model_id"]: m["status"] for m in a.list_models()["models"]}
    assert listed == {GUARD: "loaded", "job": "unloaded"}
