"""The Python packages that the GPU check carries beyond the GPU machine's own: the check's (BUNDLE) and the
shim's (what scripts/docker/requirements-api.txt installs, `shim_needed`).

bench/gpu/bundle.sh copies them from this venv, pure-Python files only, and fetches the shim's compiled ones as
CPython 3.12 wheels:

    .venv/bin/python -m bench.gpu.bundle_packages --site .gpu/site --shim-site .gpu/shim --wheels .gpu/wheels

check.py puts site/ first on its own import path and on those of scripts/run_triton.py and the model in the
backend stub; the shim it starts under gunicorn gets the wheels (unpacked), shim/ and site/.
tests/bench_unit/test_gpu_bundle.py checks BUNDLE against what the check's code imports (`needed`), and the
shim's split, in `make test`, so that a device run does not start with an ImportError.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
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
GPU_MACHINE = ("torch", "transformers", "peft", "tokenizers", "numpy", "requests", "psutil")

# Carried in .gpu/site: what the check's code imports, and what that requires, beyond GPU_MACHINE.
# etcd3gw (lora_cluster/etcd.py, for adapter_manager.etcd_state) needs futurist, pbr, debtcollector and wrapt;
# prometheus-client parses Triton's metrics (lora_core/prometheus.py, for api_shim.status). wrapt goes without
# its C extension, which it can do without (its pure-Python wrappers).
BUNDLE = ("etcd3gw", "futurist", "pbr", "debtcollector", "wrapt", "prometheus-client")

# What runs of the check's code: the check, the Triton launcher it starts, and the model in the backend stub.
ENTRY_POINTS = ("bench/gpu/check.py", "scripts/run_triton.py", "model_repository/lora_classifier/1/model.py")

# The shim, as the API image installs it. What of it the machine lacks is carried: pure-Python distributions copied
# from this venv (shim/), compiled ones as CPython 3.12 wheels (wheels/), which check.py unpacks.
API_REQUIREMENTS = REPO / "scripts" / "docker" / "requirements-api.txt"
# Compiled distributions whose version here has no CPython 3.12 wheel: the nearest one that has. tritonclient 2.51
# asks for geventhttpclient <= 2.0.2, whose wheels stop at 3.11; 2.0.10 is the first with 3.12's.
WHEEL_VERSIONS_312 = {"geventhttpclient": "2.0.10"}
# Of those, what the machine's image holds as well (docs/gpu.md; the shim imports none of aiohttp's family, which
# only tritonclient.http.aio uses) and what of a distribution's compiled files the shim never loads.
SHIM_ON_MACHINE = ("aiohttp", "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist", "multidict", "propcache", "yarl")
SHIM_ON_MACHINE += ("six", "werkzeug")
UNUSED_COMPILED = {"tritonclient": "its shared-memory library, loaded only by tritonclient.utils.*shared_memory"}
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")

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


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**MACHINE_ENVIRONMENT, "extra": extra}) for extra in ("", *extras))


def requirements(distribution: str, extras: Iterable[str] = ()) -> list[str]:
    """The distributions that `distribution` (as installed here), with `extras`, requires on the GPU machine's
    Python."""
    return [canonicalize_name(r.name) for r in _requirements(distribution, extras)]


def _requirements(distribution: str, extras: Iterable[str] = ()) -> list[Requirement]:
    found = [Requirement(line) for line in metadata.requires(distribution) or []]
    return [r for r in found if _applies(r, tuple(extras))]


def closure(distributions: Iterable[str | Requirement], stop: Iterable[str] = ()) -> set[str]:
    """`distributions` (names, or requirements with their extras) and what they require, transitively, not
    looking past those in `stop`."""
    stop = {canonicalize_name(s) for s in stop}
    found: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(d) if isinstance(d, str) else d for d in distributions]
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in found:
            continue
        found.add(key)
        if key[0] not in stop:
            todo.extend(_requirements(key[0], requirement.extras))
    return {name for name, _ in found}


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


def api_requirements() -> list[Requirement]:
    """scripts/docker/requirements-api.txt: what the shim's image installs."""
    lines = API_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def shim_needed() -> tuple[set[str], set[str]]:
    """What the shim's image installs beyond the GPU machine's packages and BUNDLE: (pure-Python distributions,
    compiled ones). numpy is the machine's, or the stub's numpy 1 site that the check gives the shim too."""
    machine = on_machine() | set(SHIM_ON_MACHINE)
    wanted = closure(api_requirements(), stop=machine) - machine - {canonicalize_name(b) for b in BUNDLE}
    compiled = {name for name in wanted if compiled_files(name) and name not in UNUSED_COMPILED}
    return wanted - compiled, compiled


def wheel_version_312(distribution: str) -> str:
    return WHEEL_VERSIONS_312.get(canonicalize_name(distribution), metadata.version(distribution))


def fetch_wheels(folder: Path, distributions: Iterable[str]) -> list[Path]:
    """CPython 3.12 manylinux wheels of `distributions` into `folder` (kept when there already), at this venv's
    versions or WHEEL_VERSIONS_312's."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for name in sorted(distributions):
        version = wheel_version_312(name)
        stem = f"{name.replace('-', '_')}-{version}-"
        have = [w for w in folder.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == name]
        if not any(w.name.lower().startswith(stem.lower()) for w in have):
            for stale in have:
                stale.unlink()
            platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                 "3.12", "--implementation", "cp", *platforms, "-d", str(folder), f"{name}=={version}"],
                check=True,
            )  # fmt: skip
        wheels += [w for w in folder.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == name]
    return wheels


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
    parser.add_argument("--site", type=Path, required=True, help="the check's folder to fill (emptied first)")
    parser.add_argument("--shim-site", type=Path, help="the shim's pure-Python folder to fill (emptied first)")
    parser.add_argument("--wheels", type=Path, help="the folder of the shim's compiled wheels (CPython 3.12)")
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
    pure, compiled = shim_needed()
    if args.shim_site:
        if args.shim_site.exists():
            shutil.rmtree(args.shim_site)
        args.shim_site.mkdir(parents=True)
        copy_site(args.shim_site, sorted(pure))
        print(f"{args.shim_site}: " + ", ".join(f"{name} {metadata.version(name)}" for name in sorted(pure)))
    if args.wheels:
        wheels = fetch_wheels(args.wheels, compiled)
        print(f"{args.wheels}: " + ", ".join(w.name.split("-")[0] + " " + w.name.split("-")[1] for w in wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
