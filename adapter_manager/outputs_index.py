"""Which training outputs the models root holds, kept current without walking the whole root per request.

A training platform keeps every job's output: the root may hold tens of thousands of them, on NFS where each
`stat` is a round trip. So:

- `output_stem(...)` decides from file names alone whether one directory is a complete training output (the
  head, the label map, and the adapter folder with its config and weights). Nothing is opened or read; a broken
  file is still refused at load (422) by `artifacts`.
- `TrainingOutputIndex` remembers every directory it has seen with its mtime. A refresh stats each known
  directory once (and each output's adapter folder, whose files change without touching the output's own
  mtime) and lists again only those whose mtime moved. A directory whose mtime is within RECENT_NS of the
  moment it was listed is listed again on the next refresh as well: a change in the same timestamp tick, or a
  server clock slightly ahead (NFS), would otherwise go unseen. Polling mtimes works on every file system,
  inotify-blind NFS included; there a change can also hide behind the client's attribute cache (actimeo).
- `IndexRefresher` refreshes an index in a daemon thread every few seconds.

The walk follows the old listing's rules: it does not follow symlinked directories, stops at a training
output, and goes at most MAX_DEPTH levels down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lora_core.commands import normalize_model_id
from lora_core.errors import InvalidRequest

from .layout import ADAPTER_CONFIG, ADAPTER_SUFFIX, ADAPTER_WEIGHTS, HEAD_SUFFIX, LABELS_SUFFIX, client_name, fs_name

log = logging.getLogger(__name__)

MAX_DEPTH = 4  # levels below the root a training output may sit (team/project/job/run)
RECENT_NS = 2_000_000_000  # a directory modified this close to its listing is listed again next time


def output_stem(directory: str, real_root: str, entries: dict[str, os.DirEntry[str]] | None = None) -> str | None:
    """`<stem>` when `directory` (a real directory inside the root, file-system form) holds exactly one
    `<stem>.head.pt`, its `<stem>.head.pt.pkl`, and a `<stem>.lora` folder holding the config and weights;
    else None. A symlinked artifact counts only when it resolves inside `real_root`, as at load. `entries`:
    the directory's listing, when the caller has just made it."""
    if entries is None:
        entries = _entries(directory)
    if entries is None:
        return None
    heads = [name for name in entries if name.endswith(HEAD_SUFFIX)]
    if len(heads) != 1:
        return None
    stem = heads[0][: -len(HEAD_SUFFIX)]
    if not (
        _is(entries.get(heads[0]), "file", real_root)
        and _is(entries.get(stem + LABELS_SUFFIX), "file", real_root)
        and _is(entries.get(stem + ADAPTER_SUFFIX), "directory", real_root)
    ):
        return None
    adapter = _entries(os.path.join(directory, stem + ADAPTER_SUFFIX))
    if adapter is None or not _is(adapter.get(ADAPTER_CONFIG), "file", real_root):
        return None
    if not any(_is(adapter.get(name), "file", real_root) for name in ADAPTER_WEIGHTS):
        return None
    return stem


def _entries(directory: str) -> dict[str, os.DirEntry[str]] | None:
    try:
        with os.scandir(directory) as listing:
            return {entry.name: entry for entry in listing}
    except OSError:
        return None


def _is(entry: os.DirEntry[str] | None, kind: str, real_root: str) -> bool:
    """Whether `entry` is a file / directory (symlinks followed) that stays inside `real_root`."""
    if entry is None:
        return False
    try:
        if not (entry.is_dir() if kind == "directory" else entry.is_file()):
            return False  # a dangling link or a loop is neither
    except OSError:
        return False
    return not entry.is_symlink() or _inside(os.path.realpath(entry.path), real_root)


def _inside(path: str, real_root: str) -> bool:
    return path.startswith(real_root + os.sep)


def listed_id(relative: str) -> str | None:
    """The model id a directory found under the root is listed as: its path in real Unicode, when that is a
    canonical id a client can load with; None for names that are not (not UTF-8, control characters, ...)."""
    model_id = client_name(relative)
    if fs_name(model_id) != relative:
        return None
    try:
        return model_id if normalize_model_id(model_id) == model_id else None
    except InvalidRequest:
        return None


def find_output(models_root: Path, model_id: str) -> bool:
    """Whether the canonical `model_id` names a complete training output inside the root, looking at that one
    directory only (query costs what it asks for; the index is not needed)."""
    real_root = os.path.realpath(models_root)
    directory = os.path.realpath(os.path.join(real_root, fs_name(model_id)))
    return _inside(directory, real_root) and os.path.isdir(directory) and output_stem(directory, real_root) is not None


@dataclass
class _Seen:
    """What a refresh learnt about one directory."""

    mtime_ns: int
    settled: bool  # listed well after its last change: an unchanged mtime means unchanged contents
    subdirectories: tuple[str, ...]  # to walk into (none for a training output)
    stem: str | None  # set when the directory holds a *.head.pt: it is a training output, complete or not
    model_id: str | None  # set when it is a complete training output, listed under this id
    adapter_mtime_ns: int | None  # the adapter folder's, whose files do not touch the output's mtime


class TrainingOutputIndex:
    """The complete training outputs under `models_root`, refreshed incrementally; thread safe."""

    def __init__(self, models_root: Path, max_depth: int = MAX_DEPTH) -> None:
        self.models_root = models_root
        self.max_depth = max_depth
        self._seen: dict[str, _Seen] = {}  # relative path (file-system form, "" for the root) -> what we saw
        self._ids: tuple[str, ...] = ()
        self._built = False
        self._lock = threading.Lock()  # one refresh at a time; readers take `_ids` as a whole
        self._changed = False
        self.last_refresh_s = 0.0  # how long the last refresh took
        self.listed_directories = 0  # directories listed by the last refresh (the others were only stat'ed)

    def refresh(self) -> None:
        """Bring the index up to date with the file system: a stat per known directory (two per training
        output), a listing per changed one."""
        with self._lock:
            started = time.perf_counter()
            real_root = os.path.realpath(self.models_root)
            seen: dict[str, _Seen] = {}
            self.listed_directories = 0
            self._changed = not self._built
            if os.path.isdir(real_root):
                self._walk(real_root, "", 0, real_root, seen)
            if self._changed or len(seen) != len(self._seen):
                self._ids = tuple(sorted(entry.model_id for entry in seen.values() if entry.model_id is not None))
            self._seen = seen
            self._built = True
            self.last_refresh_s = time.perf_counter() - started

    def model_ids(self) -> tuple[str, ...]:
        """Every complete training output, sorted; builds the index first when it has never been built."""
        if not self._built:
            self.refresh()
        return self._ids

    def _walk(self, path: str, relative: str, depth: int, real_root: str, seen: dict[str, _Seen]) -> None:
        try:
            stat = os.lstat(path)
        except OSError:
            return  # gone since its parent was listed
        entry = self._seen.get(relative)
        if entry is None or not entry.settled or entry.mtime_ns != stat.st_mtime_ns or self._adapter_moved(entry, path):
            entry = self._look(path, relative, depth, stat.st_mtime_ns, real_root)
            self._changed = True
        seen[relative] = entry
        for name in entry.subdirectories:
            child = f"{relative}/{name}" if relative else name
            self._walk(os.path.join(path, name), child, depth + 1, real_root, seen)

    @staticmethod
    def _adapter_moved(entry: _Seen, path: str) -> bool:
        if entry.stem is None:
            return False
        try:
            return os.stat(os.path.join(path, entry.stem + ADAPTER_SUFFIX)).st_mtime_ns != entry.adapter_mtime_ns
        except OSError:
            return entry.adapter_mtime_ns is not None

    def _look(self, path: str, relative: str, depth: int, mtime_ns: int, real_root: str) -> _Seen:
        """List one directory: a training output (complete or not), or a folder to walk into."""
        self.listed_directories += 1
        recent = time.time_ns() - RECENT_NS
        entries = _entries(path) or {}
        heads = [name for name in entries if name.endswith(HEAD_SUFFIX)]
        if heads:
            stem = heads[0][: -len(HEAD_SUFFIX)]
            try:
                adapter_mtime: int | None = os.stat(os.path.join(path, stem + ADAPTER_SUFFIX)).st_mtime_ns
            except OSError:
                adapter_mtime = None
            complete = bool(relative) and output_stem(path, real_root, entries) is not None
            settled = mtime_ns < recent and (adapter_mtime is None or adapter_mtime < recent)
            model_id = listed_id(relative) if complete else None
            return _Seen(mtime_ns, settled, (), stem, model_id, adapter_mtime)
        subdirectories: tuple[str, ...] = ()
        if depth < self.max_depth:
            subdirectories = tuple(sorted(name for name, e in entries.items() if _is_real_directory(e)))
        return _Seen(mtime_ns, mtime_ns < recent, subdirectories, None, None, None)


def _is_real_directory(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def list_training_outputs(models_root: Path) -> list[str]:
    """Every complete training output under the root, from one full walk (for one-off callers and tests)."""
    return list(TrainingOutputIndex(models_root).model_ids())


class IndexRefresher:
    """Refreshes an index every `interval_s` seconds in a daemon thread, so listing never walks the root."""

    def __init__(self, index: TrainingOutputIndex, interval_s: float) -> None:
        self.index = index
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outputs-index", daemon=True)

    def start(self) -> IndexRefresher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.index.refresh()
            except Exception:  # never let the thread die: the next round tries again
                log.exception("refreshing the index of %s failed", self.index.models_root)
            self._stop.wait(self.interval_s)
