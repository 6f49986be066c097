"""The adapter service: what one serving instance does, independent of Triton.

It keeps the instance's engine reconciled with the shared manifest, answers the control operations
(`load`, `unload`, `list`, `query`, `status`), and classifies a batch of requests with one encoder forward while
failing only the requests that are wrong. `model.py` converts tensors to and from these calls.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from lora_core.commands import (
    ListCommand,
    LoadCommand,
    QueryCommand,
    UnloadCommand,
    check_max_length,
    parse_command,
)
from lora_core.errors import (
    AdapterError,
    BackendUnavailable,
    CapacityExceeded,
    InternalError,
    InvalidRequest,
    ModelNotLoaded,
    PayloadTooLarge,
)

from .engine import AdapterEngine, Classification, LoadResult
from .layout import locate
from .outputs_index import TrainingOutputIndex, find_output
from .manifest import DesiredStateStore, ManifestEntry, ManifestState

log = logging.getLogger(__name__)

T = TypeVar("T")
# Compare-and-set rounds before a change gives up: each lost round means another writer changed the state.
MAX_CHANGE_ATTEMPTS = 20
EVERY_MODEL = ListCommand()  # the listing with no filter
_NEVER_SYNCED = object()  # differs from every manifest signature, None (no manifest yet) included


@dataclass(frozen=True)
class ClassifyRequest:
    texts: Sequence[str]
    model_ids: Sequence[str]  # as spelled by the client; model.py folds them (lora_core.commands.model_id_or_as_given)


class AdapterService:
    def __init__(
        self,
        engine: AdapterEngine,
        manifest: DesiredStateStore,
        instance: str,
        max_text_chars: int,
        max_adapters: int,
        check_beside: bool | None = None,
    ) -> None:
        self.engine = engine
        self.manifest = manifest
        # Whether the desired state's check runs beside each forward (see classify_current); by default on a
        # GPU with a remote store.
        self.check_beside = manifest.remote and engine.device.type != "cpu" if check_beside is None else check_beside
        self.instance = instance
        self.max_text_chars = max_text_chars
        self.max_adapters = max_adapters
        # The unloaded part of the listing; kept current by an IndexRefresher (model.py), built on first use.
        self.outputs = TrainingOutputIndex(engine.models_root)
        self.started_at = time.time()
        self.problems: dict[str, str] = {}  # model_id -> why this instance could not make it resident
        # Error code -> loads that failed here, asked for or from the desired state (model.py's metric).
        self.load_failures: Counter[str] = Counter()
        self._versions: dict[str, int] = {}  # model_id -> manifest version resident here
        self._synced: object = _NEVER_SYNCED
        self._last_state: ManifestState | None = None
        self.applied_generation = 0  # the desired state's generation (etcd: revision) resident here
        self._stale_since: float | None = None  # monotonic time the store became unreachable
        self._checks = ThreadPoolExecutor(1, thread_name_prefix=f"{instance}-state-check")

    # ------------------------------------------------------------------------------ reconciliation

    def sync(self) -> bool:
        """Make the resident adapters match the desired state; costs one stat (file manifest) or one small
        linearizable read (etcd) when nothing changed. With the store unreachable, the adapters resident now
        go on serving, and the node logs that its state may be stale. True when the state was applied anew."""
        try:
            return self._sync_to(self.manifest.signature())
        except BackendUnavailable as exc:
            self._unreachable(exc)
            return False

    def _sync_to(self, signature: Hashable | None) -> bool:
        """Apply the desired state unless `signature` says it is the one applied; raises BackendUnavailable."""
        if signature == self._synced:
            self._reachable()
            return False
        state = self._read_state()
        for problem in state.problems:
            log.error("%s: %s", self.instance, problem)
        desired = state.entries
        for model_id in [m for m in self._versions if m not in desired]:
            self._drop(model_id)
        for model_id, entry in desired.items():
            if self._versions.get(model_id) != entry.version:
                self._make_resident(entry)
        self.problems = {m: p for m, p in self.problems.items() if m in desired}
        self._synced = signature
        self.applied_generation = state.generation
        return True

    def sync_before_ready(self, retry_s: float = 1.0) -> None:
        """Apply the whole desired state before this instance reports ready, waiting as long as the store is
        unreachable: a node that starts while etcd is down, or loses it midway, stays not ready rather than
        serve an empty or partial state."""
        while True:
            try:
                self._sync_to(self.manifest.signature())
                return
            except BackendUnavailable as exc:
                self._unreachable(exc)
                time.sleep(retry_s)

    def _read_state(self) -> ManifestState:
        """The desired state, remembered as the last one known."""
        state = self.manifest.read()
        self._last_state = state
        self._reachable()
        return state

    def _known_state(self) -> ManifestState:
        """The desired state, or the last one known while the store is unreachable (listing and status go on
        answering; changes need the store and fail with backend_unavailable). While the last check found the
        store unreachable, the last state is answered at once: the next check notices its return."""
        if self._stale_since is not None and self._last_state is not None:
            return self._last_state
        try:
            return self._read_state()
        except BackendUnavailable as exc:
            if self._last_state is None:
                raise
            self._unreachable(exc)
            return self._last_state

    def _unreachable(self, exc: BackendUnavailable) -> None:
        if self._stale_since is None:
            self._stale_since = time.monotonic()
            log.error("%s: the desired state is unreachable; serving the last state known: %s", self.instance, exc)

    def _reachable(self) -> None:
        if self._stale_since is not None:
            log.warning(
                "%s: the desired state is reachable again after %.1f s",
                self.instance,
                time.monotonic() - self._stale_since,
            )
            self._stale_since = None

    def _make_resident(self, entry: ManifestEntry) -> None:
        try:
            # The manifest is an input too: written under another base, its max_length may not fit this one.
            max_length = check_max_length(entry.max_length, self.engine.max_length_limit)
            self.engine.load(entry.model_id, max_length, reload=True)
        except AdapterError as exc:
            # Reported and skipped, never a crash; a stale version is not served in its place.
            self._drop(entry.model_id)
            self.problems[entry.model_id] = exc.message
            self.load_failures[exc.code] += 1
            log.error("%s: manifest entry %s could not be loaded: %s", self.instance, entry.model_id, exc.message)
            return
        self._versions[entry.model_id] = entry.version
        self.problems.pop(entry.model_id, None)

    def _drop(self, model_id: str) -> None:
        self._versions.pop(model_id, None)
        if self.engine.is_loaded(model_id):
            self.engine.remove(model_id)

    # ----------------------------------------------------------------------------------- control

    def control(self, document: Any) -> dict[str, Any]:
        """Run one control operation, given as the decoded CONTROL JSON object (checked here, once)."""
        command = parse_command(document, self.engine.max_length_limit)
        self.sync()
        if isinstance(command, LoadCommand):
            try:
                return self.load(command)
            except AdapterError as exc:
                self.load_failures[exc.code] += 1
                raise
        if isinstance(command, UnloadCommand):
            return self.unload(command)
        if isinstance(command, ListCommand):
            return self.list_models(command)
        if isinstance(command, QueryCommand):
            return self.query(command)
        return self.status()

    def load(self, command: LoadCommand) -> dict[str, Any]:
        """Validate and load here (errors come back now), then record it for every other instance."""
        model_id = command.model_id
        resident = self.engine.resident_adapter(model_id)
        if model_id in self._versions and resident is not None and not command.reload:
            return self._load_answer(LoadResult(model_id, changed=False, adapter=resident))
        paths = locate(self.engine.models_root, model_id)
        was_resident = self.engine.is_loaded(model_id)
        result = self.engine.load_located(paths, command.max_length, replace=True)

        def record(entries: dict[str, ManifestEntry]) -> ManifestEntry:
            previous = entries.get(model_id)
            if previous is None:
                self._check_capacity(len(entries), model_id)
            entry = ManifestEntry(
                model_id=model_id,
                max_length=result.adapter.max_length,
                version=(previous.version if previous else 0) + 1,
                loaded_at=time.time(),
            )
            entries[model_id] = entry
            return entry

        try:
            entry = self._change(record)
        except BaseException:
            if not was_resident:
                self.engine.remove(model_id)
            raise
        self._versions[model_id] = entry.version
        self.problems.pop(model_id, None)
        return self._load_answer(result)

    def _check_capacity(self, loaded: int, model_id: str) -> None:
        """The one capacity rule: at most max_adapters models in the desired state."""
        if loaded >= self.max_adapters:
            raise CapacityExceeded(
                f"cannot load {model_id}: {loaded} adapters are loaded and the maximum is {self.max_adapters}; "
                "unload one first"
            )

    def _change(self, mutate: Callable[[dict[str, ManifestEntry]], T]) -> T:
        """Apply `mutate` to the desired state by compare-and-set, redoing it on the fresh state whenever
        another instance wrote in between; what `mutate` raises aborts the change."""
        for _ in range(MAX_CHANGE_ATTEMPTS):
            state = self.manifest.read()
            entries = dict(state.entries)
            outcome = mutate(entries)
            if self.manifest.compare_and_set(state.generation, entries):
                return outcome
        raise InternalError(f"the desired state changed {MAX_CHANGE_ATTEMPTS} times during one change; try again")

    def _load_answer(self, result: LoadResult) -> dict[str, Any]:
        adapter = result.adapter
        return {
            "model_id": result.model_id,
            "status": "loaded",
            "message": result.message,
            "changed": result.changed,
            "labels": list(adapter.labels),
            "max_length": adapter.max_length,
            "load_seconds": adapter.load_seconds,
            "instance": self.instance,
        }

    def unload(self, command: UnloadCommand) -> dict[str, Any]:
        model_id = command.model_id

        def forget(entries: dict[str, ManifestEntry]) -> None:
            if entries.pop(model_id, None) is None:
                raise ModelNotLoaded(f"model {model_id} is not loaded")

        self._change(forget)
        self._drop(model_id)
        return {"model_id": model_id, "status": "unloaded", "message": f"model {model_id} unloaded"}

    def list_models(self, command: ListCommand = EVERY_MODEL) -> dict[str, Any]:
        """Every model: the loaded ones (from the manifest, so always current), then every complete training
        output as unloaded (from the index); filtered by status and cut to one page. `total` and
        `loaded_count` count every match, not just the page."""
        state = self._known_state()
        loaded = sorted(state.entries) if command.status != "unloaded" else []
        unloaded: list[str] = []
        if command.status != "loaded":
            unloaded = [m for m in self.outputs.model_ids() if m not in state.entries]
        stop = None if command.limit is None else command.offset + command.limit
        page = (loaded + unloaded)[command.offset : stop]
        return {
            "models": [self._listed(model_id, state.entries) for model_id in page],
            "total": len(loaded) + len(unloaded),
            "loaded_count": len(loaded),
            "generation": state.generation,
            "instance": self.instance,
        }

    def query(self, command: QueryCommand) -> dict[str, Any]:
        """The asked-for models that exist, in the listing's order; looks at those directories only."""
        state = self._known_state()
        loaded = sorted(m for m in command.model_ids if m in state.entries)
        unloaded = sorted(
            m for m in command.model_ids if m not in state.entries and find_output(self.engine.models_root, m)
        )
        models = [self._listed(model_id, state.entries) for model_id in loaded + unloaded]
        return {"models": models, "total": len(models), "loaded_count": len(loaded), "instance": self.instance}

    def _listed(self, model_id: str, entries: dict[str, ManifestEntry]) -> dict[str, Any]:
        entry = entries.get(model_id)
        if entry is None:
            return {"model_id": model_id, "status": "unloaded", "loaded_at": None, "device": None}
        adapter = self.engine.resident_adapter(model_id)
        return {
            "model_id": model_id,
            "status": "loaded",
            "loaded_at": entry.loaded_at,
            "version": entry.version,
            "max_length": entry.max_length,
            "device": str(self.engine.device),
            "labels": list(adapter.labels) if adapter else None,
            "load_seconds": adapter.load_seconds if adapter else None,
            "problem": self.problems.get(model_id),
        }

    def status(self) -> dict[str, Any]:
        device = self.engine.device
        answer: dict[str, Any] = {
            "instance": self.instance,
            "pid": os.getpid(),
            "device": str(device),
            "kind": "gpu" if device.type == "cuda" else "cpu",
            "gpu_index": None,
            "gpu_uuid": None,
            "dtype": str(self.engine.dtype).removeprefix("torch."),
            "torch_threads": torch.get_num_threads(),
            "loaded_models": len(self._known_state().entries),
            "state_stale": self._stale_since is not None,
            "resident": sorted(a.model_id for a in self.engine.resident()),
            "adapter_bytes": sum(a.nbytes for a in self.engine.resident()),
            "max_adapters": self.max_adapters,
            "problems": dict(self.problems),
            "uptime_seconds": time.time() - self.started_at,
        }
        # Every visible GPU's index and UUID: Triton labels its GPU metrics by UUID only.
        answer["gpus"] = [
            {"index": i, "uuid": _gpu_uuid(i), "name": torch.cuda.get_device_properties(i).name}
            for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)
        ]
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            answer.update(gpu_index=index, gpu_uuid=_gpu_uuid(index))
        return answer

    # ---------------------------------------------------------------------------------- classify

    def classify_current(self, requests: Sequence[ClassifyRequest]) -> list[list[Classification] | AdapterError]:
        """Classify against the desired state as it stands after these requests arrived (read-your-writes).

        On a GPU, a remote store's check (a network round trip) runs beside the forward, while the CPU is idle:
        when it finds the state changed, the state is applied and the batch classified again, so a batch
        costs a forward, not a forward plus a round trip. On a CPU the forward keeps every core busy, and a
        check beside it preempts torch's threads (each op waits for its slowest thread) to save a round trip
        that is small next to a CPU forward (bench/etcd_check.py: the two measure alike, within this
        machine's noise), so there it runs first. A failed check never fails the batch: it serves the state
        last applied, as `sync` does."""
        if not self.check_beside:
            self._check_state(self.sync)
            return self.classify(requests)
        check = self._checks.submit(self.manifest.signature)
        answers = self.classify(requests)
        if self._check_state(lambda: self._sync_to(check.result())):
            answers = self.classify(requests)
        return answers

    def _check_state(self, sync: Callable[[], bool]) -> bool:
        try:
            return sync()
        except BackendUnavailable as exc:
            self._unreachable(exc)
        except Exception:  # never fail a batch because of the desired state; the next batch checks again
            log.exception("%s: the desired-state check failed", self.instance)
        return False

    def close(self) -> None:
        self._checks.shutdown(wait=True)

    def classify(self, requests: Sequence[ClassifyRequest]) -> list[list[Classification] | AdapterError]:
        """Classify many requests together (the engine makes one forward per run of similar lengths); a bad
        request gets its own error, the others their results."""
        answers: list[list[Classification] | AdapterError | None] = [None] * len(requests)
        good: list[int] = []
        for i, request in enumerate(requests):
            try:
                self._check(request)
                good.append(i)
            except AdapterError as exc:
                answers[i] = exc
        if good:
            texts = [t for i in good for t in requests[i].texts]
            model_ids = [m for i in good for m in requests[i].model_ids]
            results = self.engine.classify(texts, model_ids)
            start = 0
            for i in good:
                count = len(requests[i].texts)
                answers[i] = results[start : start + count]
                start += count
        return answers  # type: ignore[return-value]  # every slot is filled: an error above or a result here

    def _check(self, request: ClassifyRequest) -> None:
        if len(request.texts) != len(request.model_ids):
            raise InvalidRequest(f"TEXT has {len(request.texts)} rows but MODEL_ID has {len(request.model_ids)}")
        if not request.texts:
            raise InvalidRequest("a request needs at least one text")
        longest = max(len(t) for t in request.texts)
        if longest > self.max_text_chars:
            raise PayloadTooLarge(f"a text is {longest} characters long; the limit is {self.max_text_chars}")
        missing = sorted({m for m in request.model_ids if not self.engine.is_loaded(m)})
        if missing:
            raise ModelNotLoaded(f"model {', '.join(missing[:5])} is not loaded")


def _gpu_uuid(index: int) -> str:
    """The GPU's UUID as nvidia-smi and Triton's metrics spell it: GPU-xxxxxxxx-...."""
    uuid = str(torch.cuda.get_device_properties(index).uuid)
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
