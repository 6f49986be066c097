"""The desired state: which models are loaded, shared by every instance.

`DesiredStateStore` is the interface, written for compare-and-set: read the state and its generation, then
write a new state only if the generation has not moved meanwhile (else read again and redo the change). No
caller holds a lock across its own work, so a store shared over the network (etcd) fits the same interface.

`AdapterManifest` implements it in STATE_DIR: one JSON file, replaced atomically (write, fsync, rename)
under a short exclusive `flock` that covers only the compare and the write. Readers need no lock: a rename
swaps the whole file. A manifest that cannot be read whole is copied aside (never deleted) and rewritten
with what could be read; an entry whose id is not a canonical model id is left out as damaged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from lora_core.commands import normalize_model_id
from lora_core.errors import InvalidRequest

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = "manifest.lock"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ManifestEntry:
    model_id: str
    max_length: int
    version: int  # bumped by every (re)load, so other instances know to reload from disk
    loaded_at: float  # time.time() of the load that created this version


@dataclass(frozen=True)
class ManifestState:
    generation: int
    entries: dict[str, ManifestEntry]
    problems: list[str] = field(default_factory=list)  # what could not be read, for status reports


class DesiredStateStore(Protocol):
    remote: bool  # whether signature() is a network round trip (worth running beside the forward)

    def signature(self) -> Hashable | None:
        """Changes whenever the state may have changed; cheap enough to ask before every batch."""

    def read(self) -> ManifestState:
        """The current state and its generation."""

    def compare_and_set(self, expected_generation: int, entries: Mapping[str, ManifestEntry]) -> bool:
        """Write `entries` as generation `expected_generation + 1` if the state is still at
        `expected_generation`; False (nothing written) if another writer came first."""


class AdapterManifest:
    """The desired state in one file under STATE_DIR (see the module doc)."""

    remote = False

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / MANIFEST_NAME
        self._lock_path = self.state_dir / LOCK_NAME

    def signature(self) -> tuple[int, int, int] | None:
        """A cheap change detector (one stat): every write is a rename, so the inode changes."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> ManifestState:
        """The current desired state. Unreadable parts are reported, kept aside, and left out."""
        state, damaged = self._parse()
        if not damaged:
            return state
        with self._locked():
            state, damaged = self._parse()  # another instance may have repaired it meanwhile
            if damaged:
                kept = self._keep_aside()
                state.problems.append(f"manifest was damaged; a copy is kept at {kept.name}")
                log.error("manifest %s was damaged (%s); kept aside as %s", self.path, "; ".join(state.problems), kept)
                state = ManifestState(state.generation + 1, state.entries, state.problems)
                self._write(state)
        return state

    def compare_and_set(self, expected_generation: int, entries: Mapping[str, ManifestEntry]) -> bool:
        with self._locked():
            state, damaged = self._parse()
            if state.generation != expected_generation:
                return False
            if damaged:
                self._keep_aside()
            self._write(ManifestState(expected_generation + 1, dict(entries)))
            return True

    # ------------------------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _parse(self) -> tuple[ManifestState, bool]:
        """(state, damaged): whatever entries are valid, and whether anything was not."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ManifestState(0, {}), False
        try:
            document = json.loads(raw)
            generation = document["generation"]
            models = document["models"]
            if not isinstance(generation, int) or not isinstance(models, dict):
                raise ValueError("generation must be an integer and models an object")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
            return ManifestState(0, {}, [f"manifest unreadable: {exc}"]), True
        entries, problems = parse_entries(models)
        return ManifestState(generation, entries, problems), bool(problems)

    def _write(self, state: ManifestState) -> None:
        document = {
            "format": FORMAT_VERSION,
            "generation": state.generation,
            "written_at": time.time(),
            "models": stored_models(state.entries),
        }
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".manifest-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, ensure_ascii=False, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_directory(self.state_dir)

    def _keep_aside(self) -> Path:
        kept = self.state_dir / f"{MANIFEST_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        shutil.copy2(self.path, kept)
        return kept


def parse_entries(models: Mapping[str, object]) -> tuple[dict[str, ManifestEntry], list[str]]:
    """The valid entries of a stored `models` object, and a problem for each entry that is not (one store's
    format is every store's: the file manifest and etcd hold the same JSON)."""
    entries: dict[str, ManifestEntry] = {}
    problems: list[str] = []
    for model_id, fields in models.items():
        try:
            if not isinstance(fields, Mapping):
                raise TypeError("an entry must be an object")
            entry = ManifestEntry(
                model_id=str(fields["model_id"]),
                max_length=int(fields["max_length"]),
                version=int(fields["version"]),
                loaded_at=float(fields["loaded_at"]),
            )
            if entry.model_id != model_id:
                raise ValueError("model_id does not match its key")
            if _canonical(model_id) != model_id:
                raise ValueError("not a canonical model id")
            entries[model_id] = entry
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"manifest entry {model_id!r} skipped: {exc!r}")
    return entries, problems


def stored_models(entries: Mapping[str, ManifestEntry]) -> dict[str, dict[str, object]]:
    """`entries` as every store writes them: model_id -> the entry's fields, sorted."""
    return {model_id: asdict(entry) for model_id, entry in sorted(entries.items())}


def _canonical(model_id: str) -> str | None:
    try:
        return normalize_model_id(model_id)
    except InvalidRequest:
        return None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
