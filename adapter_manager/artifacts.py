"""Reading a training output safely and validating it before anything touches the resident model.

Every accepted variant of `training-outputs.md` becomes one typed object; every other input raises
`InvalidModel` with a message naming the file and the problem. Nothing in these files is executed:
tensors come from safetensors or `torch.load(weights_only=True)`, labels from a restricted unpickler.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from peft.utils.other import get_pattern_key
from safetensors.torch import load_file as load_safetensors

from lora_core.errors import InvalidModel
from .layout import ADAPTER_CONFIG, ADAPTER_SUFFIX, HEAD_SUFFIX, LABELS_SUFFIX, ArtifactPaths
from .pooling import POOLINGS
from .safe_pickle import restricted_loads

PEFT_KEY_PREFIX = "base_model.model."
MAX_CONFIG_BYTES = 1 << 20
MAX_LABELS_BYTES = 16 << 20
MAX_HEAD_BYTES = 512 << 20
MAX_ADAPTER_BYTES = 2 << 30

# LoraConfig switches that change the computation beyond plain LoRA; any of them set is refused.
_UNSUPPORTED_LORA_OPTIONS = {
    "use_dora": "DoRA adapters are not supported",
    "lora_bias": "LoRA with a bias on B is not supported",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D bases) is not supported",
    "modules_to_save": "modules_to_save (fully trained extra modules) is not supported",
    "layer_replication": "layer_replication changes the base model and is not supported",
    "trainable_token_indices": "trainable token embeddings are not supported",
    "target_parameters": "LoRA on raw parameters is not supported",
    "alora_invocation_tokens": "activated LoRA (aLoRA) is not supported",
    "arrow_config": "Arrow routing is not supported",
    "use_qalora": "QA-LoRA is not supported",
    "use_bdlora": "BD-LoRA is not supported",
    "kasa_config": "KaSA is not supported",
    "velora_config": "VeLoRA is not supported",
    "monteclora_config": "MonteCLoRA is not supported",
}


@dataclass(frozen=True)
class BaseSignature:
    """What validation needs to know of the base encoder: its hidden size and its Linear modules."""

    hidden_size: int
    linear_shapes: Mapping[str, tuple[int, int]]  # module name -> (out_features, in_features)
    prefix: str = ""  # the base's own attribute prefix (e.g. "bert"), tolerated in adapter keys


@dataclass(frozen=True)
class LoraModule:
    """One adapted Linear: delta(x) = (x @ a.T) @ b.T, with the LoRA scaling already folded into b."""

    a: torch.Tensor  # [rank, in_features]
    b: torch.Tensor  # [out_features, rank], scaled

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True)
class LoraAdapter:
    modules: Mapping[str, LoraModule]
    rank: int
    alpha: float
    use_rslora: bool


@dataclass(frozen=True)
class ClassificationHead:
    """The head on the pooled vector: linear (`weight`, `bias`) or two-layer (`dense` → tanh → `out_proj`)."""

    pooling: str
    out_weight: torch.Tensor  # [L, H'] (H' = H for the linear layout)
    out_bias: torch.Tensor | None
    dense_weight: torch.Tensor | None = None  # [H', H]
    dense_bias: torch.Tensor | None = None

    @property
    def layout(self) -> str:
        return "linear" if self.dense_weight is None else "two-layer"

    @property
    def num_labels(self) -> int:
        return self.out_weight.shape[0]

    @property
    def nbytes(self) -> int:
        tensors = (self.out_weight, self.out_bias, self.dense_weight, self.dense_bias)
        return sum(t.nbytes for t in tensors if t is not None)

    def to(self, device: torch.device) -> ClassificationHead:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return ClassificationHead(
            self.pooling,
            self.out_weight.to(device),
            move(self.out_bias),
            move(self.dense_weight),
            move(self.dense_bias),
        )

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = pooled
        if self.dense_weight is not None:
            hidden = torch.tanh(torch.nn.functional.linear(hidden, self.dense_weight, self.dense_bias))
        return torch.nn.functional.linear(hidden, self.out_weight, self.out_bias)


@dataclass(frozen=True)
class TrainingOutput:
    """A training output read from disk and validated against the base, ready to be made resident."""

    paths: ArtifactPaths
    adapter: LoraAdapter
    head: ClassificationHead
    labels: tuple[str, ...]


def read_training_output(paths: ArtifactPaths, base: BaseSignature) -> TrainingOutput:
    """Read and validate all three artifacts; raises `InvalidModel` naming the file and the problem."""
    adapter = read_adapter(paths, base)
    head_name, labels_name = paths.stem + HEAD_SUFFIX, paths.stem + LABELS_SUFFIX
    head = read_head(paths.head_file, base.hidden_size, paths.label(head_name))
    labels = read_labels(paths.labels_file, paths.label(labels_name))
    if head.num_labels != len(labels):
        raise InvalidModel(
            f"{paths.model_id}: the head {head_name} has {head.num_labels} outputs but the label map "
            f"{labels_name} has {len(labels)} labels"
        )
    return TrainingOutput(paths=paths, adapter=adapter, head=head, labels=labels)


def _check_size(path: Path, limit: int, label: str) -> None:
    size = path.stat().st_size
    if size > limit:
        raise InvalidModel(f"{label} is {size} bytes; the limit is {limit}")


def _read_bounded(path: Path, limit: int, label: str) -> bytes:
    _check_size(path, limit, label)
    return path.read_bytes()


# ---------------------------------------------------------------------------------------- adapter


def read_adapter(paths: ArtifactPaths, base: BaseSignature) -> LoraAdapter:
    lora_label = paths.label(paths.stem + ADAPTER_SUFFIX)
    config_label = f"{lora_label}/{ADAPTER_CONFIG}"
    config = LoraConfigSpec.parse(_read_json(paths.adapter_config, MAX_CONFIG_BYTES, config_label), config_label)
    weights_label = f"{lora_label}/{paths.adapter_weights_name}"
    safetensors = paths.adapter_weights_name.endswith(".safetensors")  # by its name in the output, not its target
    state = _read_adapter_state(paths.adapter_weights, weights_label, safetensors=safetensors)
    return _build_adapter(config, state, base, weights_label)


def _read_json(path: Path, limit: int, label: str) -> Any:
    try:
        return json.loads(_read_bounded(path, limit, label))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{label} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidModel(f"{label} is not valid JSON: nested too deeply") from exc


@dataclass(frozen=True)
class LoraConfigSpec:
    """What the engine uses of a PEFT `adapter_config.json`, validated in one place (`parse`): a plain LoRA
    (no DoRA, bias or other variant) with its rank, alpha and per-module patterns."""

    r: int
    lora_alpha: float
    use_rslora: bool
    rank_pattern: Mapping[str, float]  # PEFT's regular-expression keys -> rank
    alpha_pattern: Mapping[str, float]  # PEFT's regular-expression keys -> alpha

    @classmethod
    def parse(cls, config: Any, label: str) -> LoraConfigSpec:
        if not isinstance(config, dict):
            raise InvalidModel(f"{label} must hold a JSON object")
        peft_type = config.get("peft_type")
        if str(peft_type).upper() != "LORA":
            raise InvalidModel(f"{label}: peft_type is {peft_type!r}; only LORA adapters are served")
        for option, why in _UNSUPPORTED_LORA_OPTIONS.items():
            if config.get(option):
                raise InvalidModel(f"{label}: {why} ({option}={config[option]!r})")
        if config.get("bias", "none") != "none":
            raise InvalidModel(f"{label}: bias={config['bias']!r}; only bias='none' is supported")
        r = config.get("r")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise InvalidModel(f"{label}: r must be a positive integer, got {r!r}")
        alpha = config.get("lora_alpha", 8)
        if not _is_number(alpha):
            raise InvalidModel(f"{label}: lora_alpha must be a number, got {alpha!r}")
        patterns = {name: _pattern(config, name, label) for name in ("rank_pattern", "alpha_pattern")}
        return cls(
            r=r,
            lora_alpha=float(alpha),
            use_rslora=bool(config.get("use_rslora", False)),
            rank_pattern=patterns["rank_pattern"],
            alpha_pattern=patterns["alpha_pattern"],
        )

    def rank_of(self, module: str) -> float:
        """The rank PEFT gives `module` (its rank_pattern entry, else r)."""
        return self.rank_pattern.get(get_pattern_key(list(self.rank_pattern), module), self.r)

    def scaling_of(self, module: str, rank: int) -> float:
        """alpha / r, or alpha / sqrt(r) with rsLoRA, with the alpha PEFT gives `module`."""
        alpha = self.alpha_pattern.get(get_pattern_key(list(self.alpha_pattern), module), self.lora_alpha)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def _pattern(config: dict[str, Any], name: str, label: str) -> dict[str, float]:
    value = config.get(name) or {}
    if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
        raise InvalidModel(f"{label}: {name} must map module patterns to numbers")
    for key in value:
        try:  # PEFT matches each key as a regular expression (peft.utils.other.get_pattern_key)
            re.compile(rf"(.*\.)?({key})$")
        except re.error as exc:
            raise InvalidModel(f"{label}: {name} key {key!r} is not a valid pattern: {exc}") from exc
    return dict(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_adapter_state(path: Path, label: str, safetensors: bool) -> dict[str, torch.Tensor]:
    _check_size(path, MAX_ADAPTER_BYTES, label)
    try:
        if safetensors:  # decided by the name in the training output, not by where a symlink points
            state = load_safetensors(str(path), device="cpu")
        else:
            state = _torch_load(path)
    except Exception as exc:  # safetensors, pickle and torch raise many types for corrupt files
        raise InvalidModel(f"{label} cannot be read safely: {_first_line(exc)}") from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InvalidModel(f"{label} must hold a dict of tensors")
    _check_dense(state, label)
    return dict(state)


def _torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` of the bytes themselves: given a path, torch picks the format by the
    name's suffix (a `.safetensors` name is read as safetensors), which a symlink could choose."""
    with path.open("rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)


def _check_dense(state: Mapping[str, torch.Tensor], label: str) -> None:
    """Only ordinary dense tensors with data: sparse, meta or quantized ones cannot be checked or served."""
    for key, tensor in state.items():
        if tensor.layout != torch.strided or tensor.is_meta or tensor.is_quantized or tensor.device.type != "cpu":
            raise InvalidModel(
                f"{label}: {key} is a {str(tensor.layout).removeprefix('torch.')} tensor on {tensor.device}"
                f"{' (quantized)' if tensor.is_quantized else ''}; only dense tensors with their data are accepted"
            )


def _build_adapter(
    config: LoraConfigSpec, state: dict[str, torch.Tensor], base: BaseSignature, label: str
) -> LoraAdapter:
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        module, part = _split_lora_key(key, label)
        module = _base_module_name(module, base, label)
        pairs.setdefault(module, {})[part] = tensor
    if not pairs:
        raise InvalidModel(f"{label} holds no LoRA weights")

    modules: dict[str, LoraModule] = {}
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"lora_A", "lora_B"}:
            raise InvalidModel(f"{label}: module {module} has {sorted(parts)} but needs both lora_A and lora_B")
        a, b = parts["lora_A"], parts["lora_B"]
        out_features, in_features = base.linear_shapes[module]
        for part, tensor in parts.items():
            if tensor.dim() != 2 or not tensor.is_floating_point():
                raise InvalidModel(f"{label}: {module}.{part} must be a 2-D float tensor, got {_describe(tensor)}")
        rank = a.shape[0]
        if a.shape[1] != in_features or b.shape != (out_features, rank):
            raise InvalidModel(
                f"{label}: {module} LoRA shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit the base layer "
                f"({in_features} -> {out_features}); expected A[r, {in_features}] and B[{out_features}, r]"
            )
        expected_rank = config.rank_of(module)
        if rank != expected_rank:
            raise InvalidModel(f"{label}: {module} has rank {rank} but adapter_config.json says {expected_rank}")
        a32, b32 = a.float(), b.float() * config.scaling_of(module, rank)
        if not (torch.isfinite(a32).all() and torch.isfinite(b32).all()):
            raise InvalidModel(f"{label}: {module} holds NaN or infinite values")
        modules[module] = LoraModule(a=a32.contiguous(), b=b32.contiguous())
    return LoraAdapter(modules=modules, rank=config.r, alpha=config.lora_alpha, use_rslora=config.use_rslora)


def _split_lora_key(key: str, label: str) -> tuple[str, str]:
    name = key[len(PEFT_KEY_PREFIX) :] if key.startswith(PEFT_KEY_PREFIX) else key
    for part in ("lora_A", "lora_B"):
        suffix = f".{part}.weight"
        if name.endswith(suffix):
            return name[: -len(suffix)], part
    if "lora_magnitude_vector" in name:
        raise InvalidModel(f"{label}: {key} is a DoRA magnitude; DoRA adapters are not supported")
    if "lora_embedding" in name:
        raise InvalidModel(f"{label}: {key} adapts an embedding; only Linear modules can be adapted")
    raise InvalidModel(f"{label}: unexpected tensor {key}; only LoRA A/B weights are allowed")


def _base_module_name(module: str, base: BaseSignature, label: str) -> str:
    if module in base.linear_shapes:
        return module
    if base.prefix and module.startswith(base.prefix + "."):
        stripped = module[len(base.prefix) + 1 :]
        if stripped in base.linear_shapes:
            return stripped
    raise InvalidModel(f"{label}: target module {module} is not a Linear layer of the base model")


def _describe(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# ------------------------------------------------------------------------------------------- head

_LINEAR_KEYS = ({"weight"}, {"weight", "bias"})
_TWO_LAYER_KEYS = ({"dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"},)


def read_head(path: Path, hidden_size: int, label: str) -> ClassificationHead:
    _check_size(path, MAX_HEAD_BYTES, label)
    try:
        obj = _torch_load(path)
    except Exception as exc:  # weights_only refuses pickled modules and any non-tensor global
        raise InvalidModel(
            f"{label} cannot be read safely (it must be a state dict of tensors): {_first_line(exc)}"
        ) from exc
    pooling = "cls"
    if isinstance(obj, Mapping) and "state_dict" in obj:
        extra = set(obj) - {"state_dict", "pooling"}
        if extra:
            raise InvalidModel(f"{label}: unexpected keys {sorted(map(str, extra))} beside state_dict and pooling")
        pooling, obj = obj.get("pooling", "cls"), obj["state_dict"]
        if pooling not in POOLINGS:
            raise InvalidModel(f"{label}: pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise InvalidModel(f"{label} must hold a non-empty dict of tensors (a state dict)")
    state = _strip_common_prefix(dict(obj), label)
    _check_dense(state, label)
    for key, tensor in state.items():
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise InvalidModel(f"{label}: {key} must be finite floats, got {_describe(tensor)}")
    state = {k: v.float().contiguous() for k, v in state.items()}
    if "weight" in state:
        head = ClassificationHead(pooling, state["weight"], state.get("bias"))
    else:
        head = ClassificationHead(
            pooling, state["out_proj.weight"], state["out_proj.bias"], state["dense.weight"], state["dense.bias"]
        )
    _check_head_shapes(head, hidden_size, label)
    return head


def _strip_common_prefix(state: dict[str, torch.Tensor], label: str) -> dict[str, torch.Tensor]:
    """Find the dotted prefix (possibly empty) whose removal leaves one of the accepted layouts."""
    first = next(iter(state))
    parts = first.split(".")
    for cut in range(len(parts)):
        prefix = ".".join(parts[:cut]) + ("." if cut else "")
        if not all(k.startswith(prefix) for k in state):
            break
        stripped = {k[len(prefix) :]: v for k, v in state.items()}
        if set(stripped) in _LINEAR_KEYS or set(stripped) in _TWO_LAYER_KEYS:
            return stripped
    raise InvalidModel(
        f"{label}: keys {sorted(state)[:8]} match no accepted head layout "
        "(linear: weight[, bias]; two-layer: dense.weight, dense.bias, out_proj.weight, out_proj.bias)"
    )


def _check_head_shapes(head: ClassificationHead, hidden_size: int, label: str) -> None:
    def fail(detail: str) -> InvalidModel:
        return InvalidModel(f"{label}: {head.layout} head {detail}")

    out_w = head.out_weight
    if out_w.dim() != 2 or out_w.shape[0] < 1:
        raise fail(f"output weight must be [labels, hidden], got {list(out_w.shape)}")
    if head.out_bias is not None and tuple(head.out_bias.shape) != (out_w.shape[0],):
        raise fail(f"output bias must be [{out_w.shape[0]}], got {list(head.out_bias.shape)}")
    if head.dense_weight is None:
        if out_w.shape[1] != hidden_size:
            raise fail(f"weight is {list(out_w.shape)}; its hidden size must equal the base's {hidden_size}")
        return
    dense_w, dense_b = head.dense_weight, head.dense_bias
    if dense_w.dim() != 2 or dense_w.shape[1] != hidden_size:
        raise fail(f"dense.weight is {list(dense_w.shape)}; expected [H', {hidden_size}] for the base's hidden size")
    if dense_b is None or tuple(dense_b.shape) != (dense_w.shape[0],):
        raise fail(f"dense.bias must be [{dense_w.shape[0]}]")
    if out_w.shape[1] != dense_w.shape[0]:
        raise fail(f"out_proj.weight is {list(out_w.shape)}; expected [L, {dense_w.shape[0]}] to follow dense")


# ----------------------------------------------------------------------------------------- labels


def read_labels(path: Path, label: str) -> tuple[str, ...]:
    data = _read_bounded(path, MAX_LABELS_BYTES, label)
    try:
        obj = restricted_loads(data)
    except Exception as exc:  # ForbiddenGlobal, truncated data, bad opcodes...
        raise InvalidModel(f"{label} is not an allowed label map: {_first_line(exc)}") from exc
    return _labels_in_index_order(obj, label)


def _labels_in_index_order(obj: Any, label: str) -> tuple[str, ...]:
    if isinstance(obj, (list, tuple)):
        return _as_label_names(list(obj), label)
    if not isinstance(obj, dict) or not obj:
        raise InvalidModel(f"{label} must hold a non-empty list, tuple or dict, got {type(obj).__name__}")
    by_index = _ordered_if_indices(obj, lambda k, v: (k, v))
    by_label = _ordered_if_indices(obj, lambda k, v: (v, k))
    if by_index is not None and by_label is not None and by_index != by_label:
        raise InvalidModel(f"{label} is ambiguous: both its keys and its values are the indices 0..{len(obj) - 1}")
    ordered = by_index if by_index is not None else by_label
    if ordered is None:
        raise InvalidModel(f"{label} must map indices 0..{len(obj) - 1} to labels, or labels to those indices")
    return _as_label_names(ordered, label)


def _ordered_if_indices(obj: dict, pick: Callable[[Any, Any], tuple[Any, Any]]) -> list | None:
    """If `pick` yields (index, label) pairs with indices exactly 0..n-1, the labels in index order."""
    pairs = [pick(k, v) for k, v in obj.items()]
    indices = [i for i, _ in pairs]
    if not all(type(i) is int for i in indices) or sorted(indices) != list(range(len(pairs))):
        return None
    return [name for _, name in sorted(pairs, key=lambda p: p[0])]


def _as_label_names(values: list, label: str) -> tuple[str, ...]:
    if not values:
        raise InvalidModel(f"{label} holds no labels")
    names = []
    for value in values:
        if type(value) is int:
            if abs(value) >= 10**100:  # str() of a huge int is slow, then refused (sys.get_int_max_str_digits)
                raise InvalidModel(f"{label}: an integer label has {value.bit_length()} bits; labels are names")
            names.append(str(value))
        elif isinstance(value, str):
            names.append(value)
        else:
            raise InvalidModel(f"{label}: labels must be strings or integers, got {type(value).__name__}")
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise InvalidModel(f"{label}: labels must be unique; repeated: {duplicates[:5]}")
    return tuple(names)


__all__ = [
    "BaseSignature",
    "ClassificationHead",
    "LoraAdapter",
    "LoraModule",
    "TrainingOutput",
    "read_adapter",
    "read_head",
    "read_labels",
    "read_training_output",
]
