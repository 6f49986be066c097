"""The engine: one resident base encoder, many LoRA classifiers, one forward per batch.

Adapters are added, replaced and removed by `model_id`. `classify` takes a batch in which every text may
name a different model and runs the encoder once for all of it; each text then gets its own pooling,
head and a float32 softmax. Everything about an adapter is validated before the resident model is touched.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy

from .batching import length_runs
from .artifacts import BaseSignature, ClassificationHead, TrainingOutput, read_training_output
from lora_core.commands import default_max_length
from lora_core.errors import InvalidRequest, ModelNotLoaded

from .layout import ArtifactPaths, locate
from .lean_bert import lean_forward
from .pooling import pool
from .lora import ModuleBank, ModuleWeights, MultiLoraLinear, RowLora, stack_module, wrap_linear
from .settings import Settings

log = logging.getLogger(__name__)

# Stacked LoRA weights of recently seen adapter sets, reused by mixed batches of the same set.
BANK_CACHE_BYTES = 16 << 20
DEFAULT_MAX_BATCH_TOKENS = 16384  # TEI's default max_batch_tokens; MAX_BATCH_TOKENS overrides it
_serials = itertools.count()
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """`auto` → the first GPU when one is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` → float32 on CPU, float16 on CUDA (half precision is not faster on CPUs)."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


@dataclass(frozen=True)
class ResidentAdapter:
    """An adapter made resident: its LoRA weights per module, its head, labels and truncation length."""

    model_id: str
    stem: str
    labels: tuple[str, ...]
    head: ClassificationHead
    max_length: int
    modules: dict[str, ModuleWeights]
    nbytes: int
    loaded_at: float  # time.time() when it became resident
    load_seconds: float
    serial: int = field(default_factory=lambda: next(_serials))  # new for every load and reload


@dataclass(frozen=True)
class LoadResult:
    model_id: str
    changed: bool  # False when the model was already loaded and nothing was done
    adapter: ResidentAdapter

    @property
    def message(self) -> str:
        if not self.changed:
            return f"model {self.model_id} is already loaded"
        return f"model {self.model_id} loaded in {self.adapter.load_seconds * 1000:.0f} ms"


@dataclass(frozen=True)
class Classification:
    """One text's result: probabilities over the model's labels, in the label map's order."""

    model_id: str
    labels: tuple[str, ...]
    probabilities: np.ndarray  # float32, sums to 1

    def top(self, n: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[: max(n, 0)]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


class AdapterEngine:
    def __init__(
        self,
        base_model_dir: Path,
        models_root: Path,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        self.models_root = Path(models_root)
        self.max_batch_tokens = max_batch_tokens  # padded tokens per forward (adapter_manager.batching)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(base_model_dir), local_files_only=True, dtype=self.dtype)
        self.model.to(self.device).eval().requires_grad_(False)
        self._lean = lean_forward(self.model)  # None: this architecture runs transformers' forward
        self.signature = _signature_of(self.model)
        self.max_length_limit = _max_length_limit(self.model, self.tokenizer)
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._adapters: dict[str, ResidentAdapter] = {}
        self._wrappers: dict[str, MultiLoraLinear] = {}
        self._state_lock = threading.Lock()  # guards _adapters and _wrappers
        self._forward_lock = threading.Lock()  # the wrappers hold one batch's plan at a time
        self._banks = _BankCache(BANK_CACHE_BYTES)  # used under the forward lock
        self._tokenizer_lock = threading.Lock()  # fast tokenizers are not safe across threads
        # What one more forward costs in padded tokens (adapter_manager.batching): measured on a GPU, where a
        # forward's launches cost as much as thousands of tokens; 0 on a CPU, where a forward costs its tokens.
        self.forward_tokens = self.measure_forward_tokens() if self.device.type == "cuda" else 0
        log.info(
            "base encoder %s on %s (%s), hidden %d, %d Linear layers, a forward's fixed cost %d padded tokens",
            base_model_dir,
            self.device,
            self.dtype,
            self.signature.hidden_size,
            len(self.signature.linear_shapes),
            self.forward_tokens,
        )

    @classmethod
    def from_settings(cls, settings: Settings, device: str | None = None) -> AdapterEngine:
        return cls(
            settings.base_model_dir,
            settings.models_root,
            device=device or settings.device,
            dtype=settings.dtype,
            max_batch_tokens=settings.max_batch_tokens,
        )

    # ------------------------------------------------------------------------------ adapters

    def load(self, model_id: str, max_length: int | None = None, reload: bool = False) -> LoadResult:
        """Locate, read, validate and add the training output `model_id`.

        The arguments come checked (lora_core.commands: a canonical id, a max_length within the base's limit;
        None: the default). Loading a resident model without `reload` answers from memory: its files are not
        even looked at, so a training output changed or removed on disk does not affect what is served.
        """
        existing = self._adapters.get(model_id)
        if existing is not None and not reload:
            return LoadResult(model_id, changed=False, adapter=existing)
        return self.load_located(locate(self.models_root, model_id), max_length, replace=reload)

    def load_located(self, paths: ArtifactPaths, max_length: int | None = None, replace: bool = False) -> LoadResult:
        """Read, validate and add the training output at `paths`."""
        started = time.perf_counter()
        output = read_training_output(paths, self.signature)
        return self.add(output, max_length, replace=replace, started=started)

    def add(
        self, output: TrainingOutput, max_length: int | None = None, replace: bool = False, started: float | None = None
    ) -> LoadResult:
        """Make a validated training output resident. With `replace`, swap it in atomically for the old one."""
        started = time.perf_counter() if started is None else started
        model_id = output.paths.model_id
        max_length = default_max_length(self.max_length_limit) if max_length is None else max_length
        modules = {
            name: ModuleWeights(
                a_t=m.a.t().to(self.device, self.dtype).contiguous(),
                b_t=m.b.t().to(self.device, self.dtype).contiguous(),
            )
            for name, m in output.adapter.modules.items()
        }
        head = output.head.to(self.device)
        with self._state_lock:
            existing = self._adapters.get(model_id)
            if existing is not None and not replace:
                return LoadResult(model_id, changed=False, adapter=existing)
            for name in modules:
                if name not in self._wrappers:
                    with self._forward_lock:  # never rewire the model under a running forward
                        self._wrappers[name] = wrap_linear(self.model, name)
                        if self._lean is not None:
                            self._lean.refresh()
            adapter = ResidentAdapter(
                model_id=model_id,
                stem=output.paths.stem,
                labels=output.labels,
                head=head,
                max_length=max_length,
                modules=modules,
                nbytes=sum(w.a_t.nbytes + w.b_t.nbytes for w in modules.values()) + head.nbytes,
                loaded_at=time.time(),
                load_seconds=time.perf_counter() - started,
            )
            self._adapters[model_id] = adapter  # one assignment: batches see the old or the new, never a mix
        log.info(
            "%s model %s (stem %s, %d modules, %d labels, max_length %d) in %.1f ms",
            "reloaded" if existing else "loaded",
            model_id,
            adapter.stem,
            len(modules),
            len(adapter.labels),
            max_length,
            adapter.load_seconds * 1000,
        )
        return LoadResult(model_id, changed=True, adapter=adapter)

    def remove(self, model_id: str) -> None:
        """Drop an adapter; its tensors are freed once no batch in flight still uses them."""
        with self._state_lock:
            if self._adapters.pop(model_id, None) is None:
                raise ModelNotLoaded(f"model {model_id} is not loaded")
        log.info("unloaded model %s", model_id)

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._adapters

    def resident_adapter(self, model_id: str) -> ResidentAdapter | None:
        return self._adapters.get(model_id)

    def resident(self) -> list[ResidentAdapter]:
        with self._state_lock:
            return list(self._adapters.values())

    # -------------------------------------------------------------------------------- classify

    def classify(self, texts: Sequence[str], model_ids: Sequence[str]) -> list[Classification]:
        """Classify `texts[i]` with model `model_ids[i]`: one encoder forward per run of rows of similar
        length (adapter_manager.batching), each mixing adapters; results in the order asked."""
        if len(texts) != len(model_ids):
            raise InvalidRequest(f"{len(texts)} texts but {len(model_ids)} model ids")
        if not texts:
            return []
        adapters = self._snapshot(model_ids)  # fixed for this batch, whatever loads or unloads meanwhile
        # One bank of every adapter in the batch, in load order: the same set is the same bank, whatever the order
        # its rows came in (with coalesced 1-text requests, each batch's order is new).
        models = sorted(set(model_ids), key=lambda m: adapters[m].serial)
        bank_index = {model_id: i for i, model_id in enumerate(models)}
        ids = self._token_ids(texts, [adapters[m].max_length for m in model_ids])
        results: list[Classification | None] = [None] * len(texts)
        for run in length_runs([len(x) for x in ids], self.max_batch_tokens, forward_tokens=self.forward_tokens):
            rows_of: dict[str, list[int]] = {}  # model_id -> its positions in the run
            for position, row in enumerate(run):
                rows_of.setdefault(model_ids[row], []).append(position)
            batch = self._padded([ids[row] for row in run])
            ragged = len({len(ids[row]) for row in run}) > 1
            if len(rows_of) == 1:
                hidden = self._encode(batch, ragged, [adapters[model_ids[run[0]]]], None)
            else:
                row_adapter = [bank_index[model_ids[row]] for row in run]
                hidden = self._encode(batch, ragged, [adapters[m] for m in models], row_adapter)
            for row, result in zip(run, self._heads(hidden, batch["attention_mask"], rows_of, adapters, len(run))):
                results[row] = result
        return results  # type: ignore[return-value]  # the runs cover every row

    def warm_up(self, rows: int, tokens: int = 16) -> float:
        """One bare forward of `rows` rows of about `tokens` tokens, so that the first batch a client sends does not
        pay the first call's costs (allocations, kernel choices); its seconds."""
        started = time.perf_counter()
        encoded = self.tokenizer(["the"] * rows, padding="max_length", truncation=True, max_length=tokens)
        self._bare_forward(self._padded(encoded["input_ids"]))
        return time.perf_counter() - started

    def _bare_forward(self, batch: dict[str, torch.Tensor]) -> None:
        """The base encoder alone over a padded batch, no adapter (the masked path, as padded rows take)."""
        with self._forward_lock, torch.inference_mode():
            if self._lean is not None:
                self._lean(batch["input_ids"], batch["attention_mask"])
            else:
                self.model(**batch)

    def measure_forward_tokens(self, repeats: int = 5) -> int:
        """A forward's fixed cost in padded tokens: the time of a bare forward of one short row over a padded
        token's share of a forward of `max_batch_tokens` (at most 64 rows of 128); median of `repeats` each, after
        one of each to warm up. At most `max_batch_tokens`, where the large forward costs no more than the small
        or the budget leaves no larger forward to weigh."""
        small = (1, 16)
        rows = max(1, min(64, self.max_batch_tokens // 128))
        large = (rows, min(128, self.max_batch_tokens // rows, self.max_length_limit))
        if large[0] * large[1] <= small[0] * small[1]:
            return self.max_batch_tokens
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda *_: None)

        def seconds(rows: int, tokens: int) -> float:
            encoded = self.tokenizer(["the"] * rows, padding="max_length", truncation=True, max_length=tokens)
            batch = self._padded(encoded["input_ids"])
            times = []
            for _ in range(repeats + 1):
                sync(self.device)
                started = time.perf_counter()
                self._bare_forward(batch)
                sync(self.device)
                times.append(time.perf_counter() - started)
            return float(np.median(times[1:]))

        fixed, whole = seconds(*small), seconds(*large)
        per_token = (whole - fixed) / (large[0] * large[1] - small[0] * small[1])
        if per_token <= 0:
            return self.max_batch_tokens
        return int(min(self.max_batch_tokens, fixed / per_token))

    def _snapshot(self, model_ids: Sequence[str]) -> dict[str, ResidentAdapter]:
        with self._state_lock:
            missing = sorted({m for m in model_ids if m not in self._adapters})
            if missing:
                raise ModelNotLoaded(f"model {', '.join(missing[:5])} is not loaded")
            return {m: self._adapters[m] for m in set(model_ids)}

    def _token_ids(self, texts: Sequence[str], max_lengths: Sequence[int]) -> list[list[int]]:
        """Each text's token ids, truncated at its own model's max_length."""
        ids: list[list[int]] = [[] for _ in texts]
        with self._tokenizer_lock:
            for length in set(max_lengths):
                rows = [i for i, m in enumerate(max_lengths) if m == length]
                for row, input_ids in zip(rows, self._encode_texts([texts[i] for i in rows], length)):
                    ids[row] = input_ids
        return ids

    def _encode_texts(self, texts: list[str], max_length: int) -> list[list[int]]:
        """What `tokenizer(texts, truncation=True, max_length=...)["input_ids"]` gives. A fast tokenizer is set up
        by its own method and then asked directly: the BatchEncoding it would build (offsets, masks, type ids for
        every text) costs more than the tokenizing itself for one short text."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        self.tokenizer.set_truncation_and_padding(
            padding_strategy=PaddingStrategy.DO_NOT_PAD,
            truncation_strategy=TruncationStrategy.LONGEST_FIRST,
            max_length=max_length,
            stride=0,
            pad_to_multiple_of=None,
            padding_side=None,
        )
        backend.encode_special_tokens = bool(self.tokenizer.split_special_tokens)
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=True)]

    def _tokenize(self, texts: Sequence[str], max_lengths: Sequence[int]) -> dict[str, torch.Tensor]:
        """Every text in one padded batch, as the bare encoder takes it (the benchmarks' ceilings)."""
        return self._padded(self._token_ids(texts, max_lengths))

    def _padded(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """One padded batch of token ids, with its attention mask, on the device."""
        longest = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if self._uses_token_types:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return {k: v.to(self.device) for k, v in batch.items()}

    def _encode(
        self,
        batch: dict[str, torch.Tensor],
        ragged: bool,
        adapters: list[ResidentAdapter],
        row_adapter: list[int] | None,
    ) -> torch.Tensor:
        """The last hidden state of `batch` (`ragged`: some row is padded), each row with its adapter's LoRA."""
        rows = None if row_adapter is None else torch.tensor(row_adapter, device=self.device)
        with self._forward_lock, torch.inference_mode():
            try:
                if rows is None:
                    for name, wrapper in self._wrappers.items():
                        weights = adapters[0].modules.get(name)
                        wrapper.set_plan(None if weights is None else RowLora(shared=weights))
                else:
                    banks, grown = self._banks.get(adapters), False
                    for name, wrapper in self._wrappers.items():
                        if name not in banks:
                            banks[name], grown = stack_module([a.modules.get(name) for a in adapters]), True
                        bank = banks[name]
                        wrapper.set_plan(None if bank is None else bank.rows(rows))
                    if grown:
                        self._banks.grown(adapters)
                if self._lean is not None:
                    mask = batch["attention_mask"] if ragged else None
                    return self._lean(batch["input_ids"], mask)  # the engine's token types are all 0: one segment
                return self.model(**batch).last_hidden_state
            finally:
                for wrapper in self._wrappers.values():
                    wrapper.set_plan(None)

    def _heads(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        rows_of: dict[str, list[int]],
        adapters: dict[str, ResidentAdapter],
        size: int,
    ) -> list[Classification]:
        """Each model's pooling, head and float32 softmax on its own rows."""
        results: list[Classification | None] = [None] * size
        with torch.inference_mode():
            for model_id, rows in rows_of.items():
                adapter = adapters[model_id]
                index = torch.tensor(rows, device=hidden.device)
                pooled = pool(
                    hidden.index_select(0, index).float(), attention_mask.index_select(0, index), adapter.head.pooling
                )
                probabilities = torch.softmax(adapter.head.logits(pooled), dim=-1).cpu().numpy()
                for row, p in zip(rows, probabilities):
                    results[row] = Classification(model_id, adapter.labels, p)
        return results  # type: ignore[return-value]  # rows_of covers every row, so no None is left


class _BankCache:
    """Module banks per adapter set (keyed by the adapters' serials, so a reload never reuses a stale
    bank), least recently used first out once they hold more than `budget` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[tuple[int, ...], dict[str, ModuleBank | None]] = OrderedDict()
        self._sizes: dict[tuple[int, ...], int] = {}  # bytes of each entry, as of its last growth
        self.nbytes = 0

    def get(self, adapters: Sequence[ResidentAdapter]) -> dict[str, ModuleBank | None]:
        key = self._key(adapters)
        banks = self._entries.get(key)
        if banks is None:
            banks = self._entries[key] = {}
            self._sizes[key] = 0
        self._entries.move_to_end(key)
        return banks

    def grown(self, adapters: Sequence[ResidentAdapter]) -> None:
        """The banks of `adapters` grew: account for them, and drop the least recently used entries while the
        cache holds more than its budget (never the one in use)."""
        key = self._key(adapters)
        size = sum(b.nbytes for b in self._entries[key].values() if b is not None)
        self.nbytes += size - self._sizes[key]
        self._sizes[key] = size
        while self.nbytes > self.budget and len(self._entries) > 1:
            dropped, _ = self._entries.popitem(last=False)
            self.nbytes -= self._sizes.pop(dropped)

    @staticmethod
    def _key(adapters: Sequence[ResidentAdapter]) -> tuple[int, ...]:
        return tuple(a.serial for a in adapters)


def _signature_of(model: torch.nn.Module) -> BaseSignature:
    linear_shapes = {
        name: (module.out_features, module.in_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    config: Any = model.config  # a PretrainedConfig; nn.Module's __getattr__ types it as Tensor | Module
    return BaseSignature(
        hidden_size=int(config.hidden_size),
        linear_shapes=linear_shapes,
        prefix=getattr(model, "base_model_prefix", "") or "",
    )


def _max_length_limit(model: torch.nn.Module, tokenizer) -> int:
    limits = [int(getattr(model.config, "max_position_embeddings", 512))]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits)
