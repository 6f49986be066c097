"""Where a training output lives: `model_dir` → the three artifact paths, safely inside the models root.

Only locating happens here; reading the files is `artifacts`' job.

Names cross one boundary here. Clients and the manifest use real Unicode names (`model_id`, `stem`); the
file system is reached through `fs_name(...)`, and names read from it come back through `client_name(...)`.
Both are the identity where Python's file-system encoding is UTF-8. Inside Triton's Python backend stub it
is ASCII whatever the locale variables say (the stub's embedded interpreter starts with an isolated
configuration: no setlocale, no UTF-8 mode, the environment ignored), so a name like "类别/模型" would
raise UnicodeEncodeError; mapped to its UTF-8 bytes through `surrogateescape`, it reaches the right files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lora_core.commands import is_unicode
from lora_core.errors import InvalidModel, InvalidRequest, ModelNotFound

HEAD_SUFFIX = ".head.pt"
LABELS_SUFFIX = ".head.pt.pkl"
ADAPTER_SUFFIX = ".lora"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # the first present is read


@dataclass(frozen=True)
class ArtifactPaths:
    """The files of one training output, all resolved and inside the models root."""

    model_id: str
    directory: Path
    stem: str
    adapter_dir: Path
    head_file: Path
    labels_file: Path
    adapter_config: Path  # <stem>.lora/adapter_config.json
    adapter_weights: Path  # <stem>.lora/adapter_model.safetensors, else adapter_model.bin
    adapter_weights_name: str  # that file's name in the training output, which decides its format

    def label(self, relative: str) -> str:
        """How messages name a file of this output: by the name the client knows, relative to the models root,
        never by where it resolves to (an artifact may be a symlink to elsewhere inside the root)."""
        return f"{self.model_id}/{relative}"


def fs_name(name: str) -> str:
    """`name` (real Unicode) as this interpreter's file-system functions must be given it: its UTF-8 bytes."""
    return os.fsdecode(name.encode("utf-8"))


def client_name(name: str) -> str:
    """A name read from the file system (`fs_name`'s form) as real Unicode; bytes that are not UTF-8 become
    U+FFFD, so such a name is printable but names nothing that exists."""
    return os.fsencode(name).decode("utf-8", "replace")


def resolve_inside(root: Path, relative: str, what: str = "model_dir") -> Path:
    """Resolve `root/relative` (symlinks included) and refuse anything that ends up outside `root`.

    A `model_dir` outside the root is a bad request; a file *inside* a training output that links out of
    the root makes that training output unsafe, so it is refused as an invalid model.
    """
    real_root = root.resolve()
    if not is_unicode(relative):
        if what == "model_dir":
            raise InvalidRequest("model_dir is not valid Unicode (it holds an unpaired surrogate)")
        raise InvalidModel(f"{relative.encode('utf-8', 'replace').decode()} is not a valid Unicode name")
    try:
        candidate = (real_root / fs_name(relative)).resolve()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop (RuntimeError before 3.13)
        if what == "model_dir":
            raise InvalidRequest(f"model_dir {relative!r} cannot be resolved: {_reason(exc)}") from exc
        raise InvalidModel(f"{relative} cannot be resolved: {_reason(exc)}") from exc
    if what == "model_dir" and candidate == real_root:
        raise InvalidRequest(f"model_dir {relative!r} is the models root itself, not a directory inside it")
    if candidate != real_root and real_root not in candidate.parents:
        if what == "model_dir":
            raise InvalidRequest(f"model_dir {relative!r} resolves outside the models root")
        raise InvalidModel(f"{relative} links outside the models root; a training output must be self-contained")
    return candidate


def _reason(exc: BaseException) -> str:
    """An OS error without the absolute path it carries (the client knows paths relative to the root)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "symlink loop" if isinstance(exc, RuntimeError) else type(exc).__name__


def _exists(path: Path, kind: str, label: str) -> bool:
    """Whether `path` is a directory / a file; errors other than 'not there' make the output unreadable."""
    try:
        return path.is_dir() if kind == "directory" else path.is_file()
    except OSError as exc:
        raise InvalidModel(f"{label} cannot be read: {_reason(exc)}") from exc


def locate(models_root: Path, model_id: str) -> ArtifactPaths:
    """Find the training output `model_id` (canonical: lora_core.commands.normalize_model_id): its directory,
    `<stem>`, and the three artifacts, each resolved and inside the models root."""
    directory = resolve_inside(models_root, model_id)
    try:
        is_directory = directory.is_dir()
    except OSError as exc:
        raise InvalidRequest(f"model_dir {model_id!r} cannot be resolved: {_reason(exc)}") from exc
    if not is_directory:
        raise ModelNotFound(f"model_dir {model_id!r} does not exist under the models root")
    stem = discover_stem(directory, model_id)
    paths = {
        "adapter": (f"{stem}{ADAPTER_SUFFIX}", "directory"),
        "head": (f"{stem}{HEAD_SUFFIX}", "file"),
        "labels": (f"{stem}{LABELS_SUFFIX}", "file"),
    }
    resolved: dict[str, Path] = {}
    for role, (name, kind) in paths.items():
        path = resolve_inside(models_root, f"{model_id}/{name}", "artifact")
        if not _exists(path, kind, f"{model_id}/{name}"):
            raise InvalidModel(f"{model_id}: the {role} {kind} {name} is missing")
        resolved[role] = path
    lora = f"{model_id}/{stem}{ADAPTER_SUFFIX}"
    config = resolve_inside(models_root, f"{lora}/{ADAPTER_CONFIG}", "artifact")
    if not _exists(config, "file", f"{lora}/{ADAPTER_CONFIG}"):
        raise InvalidModel(f"{lora}/{ADAPTER_CONFIG} is missing")
    for weights_name in ADAPTER_WEIGHTS:
        weights = resolve_inside(models_root, f"{lora}/{weights_name}", "artifact")
        if _exists(weights, "file", f"{lora}/{weights_name}"):
            break
    else:
        raise InvalidModel(f"{lora} holds neither {ADAPTER_WEIGHTS[0]} nor {ADAPTER_WEIGHTS[1]}")
    return ArtifactPaths(
        model_id=model_id,
        directory=directory,
        stem=stem,
        adapter_dir=resolved["adapter"],
        head_file=resolved["head"],
        labels_file=resolved["labels"],
        adapter_config=config,
        adapter_weights=weights,
        adapter_weights_name=weights_name,
    )


def discover_stem(directory: Path, model_id: str) -> str:
    """The one `<stem>` for which `<stem>.head.pt` exists in `directory`."""
    try:
        names = sorted(client_name(p.name) for p in directory.iterdir())
    except OSError as exc:
        raise InvalidModel(f"{model_id}: the directory cannot be listed: {_reason(exc)}") from exc
    heads = [name for name in names if name.endswith(HEAD_SUFFIX)]
    if not heads:
        found = names[:10]
        raise InvalidModel(f"{model_id}: no *{HEAD_SUFFIX} file found (directory holds: {found or 'nothing'})")
    if len(heads) > 1:
        raise InvalidModel(f"{model_id}: several models in one directory, expected exactly one: {heads}")
    return heads[0][: -len(HEAD_SUFFIX)]
