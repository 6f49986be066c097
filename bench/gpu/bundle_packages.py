"""The Python packages that the GPU check carries beyond the GPU machine's own: the one list, BUNDLE.

bench/gpu/bundle.sh copies them from this venv into .gpu/site, pure-Python files only:

    .venv/bin/python -m bench.gpu.bundle_packages --site .gpu/site

check.py puts that folder first on its own import path and on those of scripts/run_triton.py and the model in
the backend stub. tests/bench_unit/test_gpu_bundle.py checks BUNDLE against what the check's code imports
(`needed`), in `make test`, so that a device run does not start with an ImportError.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as metadata
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]

# What the GPU machines lent to this project have (docs/gpu.md): these and whatever they require.
GPU_MACHINE = ("torch", "transformers", "peft", "tokenizers", "numpy", "requests")

# Carried in .gpu/site: what the check's code imports, and what that requires, beyond GPU_MACHINE.
# etcd3gw (lora_core/etcd.py, for adapter_manager.etcd_state) needs futurist, pbr, debtcollector and wrapt;
# prometheus-client parses Triton's metrics (lora_core/prometheus.py, for api_shim.status). wrapt goes without
# its C extension, which it can do without (its pure-Python wrappers).
BUNDLE = ("etcd3gw", "futurist", "pbr", "debtcollector", "wrapt", "prometheus-client")

# What runs of the check's code: the check, the Triton launcher it starts, and the model in the backend stub.
ENTRY_POINTS = ("bench/gpu/check.py", "scripts/run_triton.py", "model_repository/lora_classifier/1/model.py")

# Modules imported there that no distribution provides.
NOT_DISTRIBUTED = {"triton_python_backend_utils": "the python backend's stub provides it"}

# The GPU machine's Python, for the markers of requirements.
MACHINE_ENVIRONMENT = {
    **default_environment(),
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}

EXTENSION_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")


# ----------------------------------------------------------------------------- what the code imports


def _module_file(name: str, roots: Iterable[Path]) -> Path | None:
    for root in roots:
        base = root.joinpath(*name.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


def _module_name(path: Path) -> str:
    """`path`'s dotted name from the repository's root when every folder on the way is a package, else its stem
    (a script: its own folder is then first on the import path)."""
    parts = [path.stem] if path.name != "__init__.py" else []
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder != REPO:
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts) if folder == REPO else path.stem


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (inside functions too), less those only a type checker runs and
    those whose failure the code catches (optional imports)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
        elif isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for part in (*node.handlers, *node.orelse, *node.finalbody):
                yield from _imports(part)
        else:
            yield from _imports(node)


def code_imports(entries: Iterable[str] = ENTRY_POINTS) -> tuple[set[str], set[str]]:
    """Statically, from each entry file through every module of ours that it imports: the modules of ours
    reached, and the top-level names of the other modules imported."""
    ours: set[str] = set()
    others: set[str] = set()
    for entry in entries:
        path = REPO / entry
        roots = [REPO] if _module_name(path) != path.stem or path.parent == REPO else [path.parent, REPO]
        todo = [path]
        seen: set[Path] = set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            name = _module_name(current)
            ours.add(name)
            package = name if current.name == "__init__.py" else name.rpartition(".")[0]
            for node in _imports(ast.parse(current.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    wanted = [alias.name for alias in node.names]
                else:
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - node.level + 1]
                        module = ".".join([*base, node.module] if node.module else base)
                    else:
                        module = node.module or ""
                    wanted = [module] + [f"{module}.{alias.name}" for alias in node.names]
                for full in wanted:
                    top = full.split(".")[0]
                    if _module_file(top, roots) is None:
                        others.add(top)
                        continue
                    # every package on the way is imported too
                    for i in range(1, full.count(".") + 2):
                        found = _module_file(".".join(full.split(".")[:i]), roots)
                        if found is not None:
                            todo.append(found)
    return ours, others - set(sys.stdlib_module_names) - {"__future__"}


# ------------------------------------------------------------------------------ distributions needed


def requirements(distribution: str) -> list[str]:
    """The distributions that `distribution` (as installed here) requires on the GPU machine's Python."""
    names = []
    for line in metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(MACHINE_ENVIRONMENT):
            names.append(canonicalize_name(requirement.name))
    return names


def closure(distributions: Iterable[str], stop: Iterable[str] = ()) -> set[str]:
    """`distributions` and what they require, transitively, not looking past those in `stop`."""
    stop = {canonicalize_name(s) for s in stop}
    found: set[str] = set()
    todo = [canonicalize_name(d) for d in distributions]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        if name not in stop:
            todo.extend(requirements(name))
    return found


def on_machine() -> set[str]:
    return closure(GPU_MACHINE)


def needed(entries: Iterable[str] = ENTRY_POINTS) -> tuple[set[str], set[str]]:
    """The distributions the code run from `entries` needs beyond the GPU machine's (what BUNDLE must hold), and
    the modules it imports that no installed distribution provides (besides NOT_DISTRIBUTED)."""
    _, tops = code_imports(entries)
    providers = metadata.packages_distributions()
    direct, unknown = set(), set()
    for top in tops:
        if top in NOT_DISTRIBUTED:
            continue
        if top not in providers:
            unknown.add(top)
        direct.update(canonicalize_name(d) for d in providers.get(top, []))
    machine = on_machine()
    return closure(direct, stop=machine) - machine, unknown


# ------------------------------------------------------------------------------------------- the site


def compiled_files(distribution: str) -> list[str]:
    """The compiled extensions among `distribution`'s installed files (its RECORD)."""
    return [str(f) for f in metadata.files(distribution) or [] if str(f).endswith(EXTENSION_SUFFIXES)]


def copy_site(site: Path, distributions: Iterable[str] = BUNDLE) -> list[str]:
    """Copy each distribution's installed files (its RECORD) into `site`, a folder for the import path: its
    modules and its .dist-info (pbr reads etcd3gw's version there), without compiled extensions, bytecode or
    scripts. The names of what was left out, compiled."""
    left_out = []
    for name in distributions:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            text = str(file)
            if text.startswith("..") or "__pycache__" in file.parts or text.endswith(".pyc"):
                continue
            if text.endswith(EXTENSION_SUFFIXES):
                left_out.append(text)
                continue
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                target = site / text
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    return left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, required=True, help="the folder to fill (emptied first)")
    args = parser.parse_args(argv)
    missing, unknown = needed()
    missing -= {canonicalize_name(b) for b in BUNDLE}
    if missing or unknown:
        sys.exit(f"BUNDLE lacks {sorted(missing)}; no distribution provides {sorted(unknown)}")
    if args.site.exists():
        shutil.rmtree(args.site)
    args.site.mkdir(parents=True)
    left_out = copy_site(args.site)
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in BUNDLE)
    print(f"{args.site}: {versions}" + (f"; without {', '.join(left_out)}" if left_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
