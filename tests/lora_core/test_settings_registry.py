"""The settings registry (lora_core/settings_registry.py) is the one definition of every setting: the code reads no
other name, each settings class agrees with it, docs/settings.md is generated from it, and .env, the compose files
and the Kubernetes manifests agree with its defaults."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from adapter_manager.settings import Settings
from api_shim.settings import ShimSettings
from lora_cluster.node_agent import NodeAgentSettings
from lora_core.etcd_settings import EtcdSettings
from lora_core.settings import load_settings, read
from lora_core.settings_registry import (
    AGENT,
    BEFORE_IMPORT,
    COMPOSE,
    KINDS,
    MODEL,
    NOT_SETTINGS,
    READERS,
    REGISTRY,
    SETTINGS,
    SHIM,
)

REPO = Path(__file__).resolve().parents[2]
# The code that runs in production: every environment read in it goes through the registry.
PRODUCTION = ["adapter_manager", "api_shim", "lora_core", "lora_cluster", "scripts", "model_repository"]
COMPOSE_FILES = [REPO / "docker-compose.yml", *sorted((REPO / "deploy" / "compose").glob("*.yml"))]
OUR_IMAGES = ("lora-classifier-triton", "lora-classifier-api")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def production_files() -> list[Path]:
    return [path for package in PRODUCTION for path in sorted((REPO / package).rglob("*.py"))]


def test_the_page_is_generated_from_the_registry_and_current():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "settings_doc.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_entry_is_whole_and_its_default_is_of_its_type():
    assert len(REGISTRY) == len(SETTINGS), "a name defined twice"
    for entry in SETTINGS:
        assert ENV_NAME.match(entry.name), entry.name
        assert entry.kind in KINDS, entry.name
        assert entry.readers and set(entry.readers) <= set(READERS), entry.name
        assert entry.help.strip() and "\n" not in entry.help, entry.name
        read(entry.name, {})  # the default converts: a ValueError names the setting
        assert entry.name not in NOT_SETTINGS


@pytest.mark.parametrize(
    "cls, reader", [(Settings, MODEL), (ShimSettings, SHIM), (NodeAgentSettings, AGENT), (EtcdSettings, MODEL)]
)
def test_each_settings_class_reads_registered_settings_of_the_registered_type(cls, reader):
    for f in fields(cls):
        entry = REGISTRY[f.metadata["env"]]
        assert reader in entry.readers, f"{entry.name} is read by the {reader}, the registry does not say so"
    if cls is not NodeAgentSettings:  # which requires its URLs
        load_settings(cls, environ={})  # a field whose type is not the registry's raises TypeError


def test_a_field_whose_type_differs_from_the_registry_is_refused():
    from dataclasses import dataclass

    from lora_core.settings import setting

    @dataclass(frozen=True)
    class Wrong:
        port: str = setting("API_PORT")  # an integer in the registry

    with pytest.raises(TypeError, match="API_PORT"):
        load_settings(Wrong, environ={})


def test_a_value_of_the_wrong_type_names_its_setting():
    with pytest.raises(ValueError, match="TRITON_HTTP_PORT must be an integer, got 'eighty'"):
        read("TRITON_HTTP_PORT", {"TRITON_HTTP_PORT": "eighty"})
    assert read("TRITON_HTTP_PORT", {"TRITON_HTTP_PORT": " 9 "}) == 9
    assert read("TRITON_HTTP_PORT", {"TRITON_HTTP_PORT": ""}) == int(REGISTRY["TRITON_HTTP_PORT"].default)


def _environment_reads(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, how, name) of each environment read with a literal name: os.environ.get / [] / getenv, and the
    copies of it the launchers pass on (env.get, env.setdefault, env[...], environ.get)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            owner = ast.unparse(node.func.value)
            method = node.func.attr
            if owner == "os" and method == "getenv":
                found.append((node.lineno, "os.getenv", first.value))
            elif owner in ("os.environ", "environ", "env") and method in ("get", "setdefault", "pop"):
                found.append((node.lineno, f"{owner}.{method}", first.value))
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            owner = ast.unparse(node.value)
            if owner in ("os.environ", "environ", "env") and isinstance(node.slice, ast.Constant):
                found.append((node.lineno, f"{owner}[]", str(node.slice.value)))
    return found


# A WSGI request's environ (PEP 3333; REMOTE_ADDR and RAW_URI as gunicorn sets them), which the shim's code also
# calls `environ`: its names are the request's, never the process's.
WSGI_REQUEST_NAMES = re.compile(
    r"(REQUEST_METHOD|SCRIPT_NAME|PATH_INFO|QUERY_STRING|CONTENT_TYPE|CONTENT_LENGTH|SERVER_NAME|SERVER_PORT"
    r"|SERVER_PROTOCOL|REMOTE_ADDR|RAW_URI|HTTP_(?!PROXY$)[A-Z0-9_]+|wsgi\.[a-z_]+)"  # HTTP_PROXY: a process's too
)


def test_the_code_reads_no_environment_name_the_registry_does_not_define():
    unknown, direct = [], []
    for path in production_files():
        for line, how, name in _environment_reads(ast.parse(path.read_text())):
            if how.startswith("environ") and WSGI_REQUEST_NAMES.fullmatch(name):
                continue
            where = f"{path.relative_to(REPO)}:{line} {how}({name!r})"
            if name not in REGISTRY and name not in NOT_SETTINGS:
                unknown.append(where)
            # os.environ itself only before the registry can be imported, and for the names that are no settings.
            early = name in REGISTRY and BEFORE_IMPORT in REGISTRY[name].readers
            if how.startswith(("os.", "environ")) and not early and name not in NOT_SETTINGS:
                direct.append(where)
    assert not unknown, "read but not in lora_core/settings_registry.py:\n" + "\n".join(unknown)
    assert not direct, "read around the registry (use lora_core.settings.read):\n" + "\n".join(direct)


def test_every_name_the_code_reads_through_the_registry_is_defined():
    for path in production_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("read", "setting") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    assert first.value in REGISTRY, f"{path.relative_to(REPO)}:{node.lineno} {first.value}"


def test_every_setting_is_read_somewhere():
    code = "\n".join(path.read_text() for path in production_files())
    compose = "\n".join(path.read_text() for path in COMPOSE_FILES)
    for entry in SETTINGS:
        where = compose if entry.readers == (COMPOSE,) else code
        assert f'"{entry.name}"' in where or f"${{{entry.name}" in where, f"{entry.name} is defined but not read"


def _agrees(entry_name: str, value: str) -> bool:
    """Whether `value` is the setting's default, or the value the registry says the images use instead."""
    entry = REGISTRY[entry_name]
    return value in (entry.default, entry.container and entry.container[0])


def test_dot_env_sets_registered_settings_at_their_defaults():
    names = []
    for line in (REPO / ".env").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        names.append(name)
        assert name in REGISTRY, f".env sets {name}, which no code reads"
        assert _agrees(name, value), f".env: {name}={value}, the registry's default is {REGISTRY[name].default!r}"
    assert len(names) == len(set(names))


INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}")


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_interpolates_registered_settings_at_their_defaults(path):
    for name, how, value in INTERPOLATION.findall(path.read_text()):
        assert name in REGISTRY, f"{path.name}: ${{{name}}} is no setting"
        if how == "-" and REGISTRY[name].kind == "path":  # a host path, relative to the compose file's folder
            wanted = (REPO / REGISTRY[name].default).resolve()
            assert (path.parent / value).resolve() == wanted, f"{path.name}: {name} defaults to {value!r}"
        elif how == "-":
            assert _agrees(name, value), f"{path.name}: {name} defaults to {value!r}, the registry says otherwise"


def _our_containers_env(path: Path) -> list[tuple[str, str, object]]:
    """(service or container, name, value) of every environment entry of our images' containers."""
    found = []
    for document in yaml.safe_load_all(path.read_text()):
        if not document:
            continue
        for service, spec in (document.get("services") or {}).items():
            if str(spec.get("image", "")).startswith(OUR_IMAGES):
                environment = spec.get("environment") or {}
                found += [(service, name, value) for name, value in environment.items()]
        template = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in template.get("containers", []):
            if str(container.get("image", "")).startswith(OUR_IMAGES):
                for variable in container.get("env", []):
                    found.append((container["name"], variable["name"], variable.get("value")))
    return found


KUBERNETES_ONLY = {"POD_IP"}  # the pod's address, for $(POD_IP) in the node agent's URLs


@pytest.mark.parametrize("path", COMPOSE_FILES + sorted((REPO / "deploy" / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_our_containers_get_registered_settings(path):
    entries = _our_containers_env(path)
    if path.name in ("docker-compose.yml", "gpu-node.yml", "triton.yaml", "api.yaml"):
        assert entries, f"{path.name}: no container of ours found; the test no longer reads this file"
    for container, name, value in entries:
        if name in KUBERNETES_ONLY:
            continue
        assert name in REGISTRY, f"{path.name}: {container} sets {name}, which no code reads"
        literal = isinstance(value, (str, int)) and "$" not in str(value)
        if path.suffix == ".yml" and literal:  # compose; the Kubernetes manifests wire their own services
            assert _agrees(name, str(value)), f"{path.name}: {container}: {name}={value} is not in the registry"


def test_docker_stop_waits_longer_than_the_drain():
    drain_s = int(REGISTRY["DRAIN_TIMEOUT_S"].default)
    for path in COMPOSE_FILES:
        for service, spec in (yaml.safe_load(path.read_text()).get("services") or {}).items():
            if "DRAIN_TIMEOUT_S" in (spec.get("environment") or {}):
                grace = spec.get("stop_grace_period", "10s")
                assert int(grace.removesuffix("s")) >= drain_s + 5, f"{path.name}: {service}: {grace}"


def test_a_launcher_refuses_a_setting_of_the_wrong_type_by_name():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_triton.py"), "--help"],
        env={"PATH": "/usr/bin:/bin", "TRITON_HTTP_PORT": "eighty"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "TRITON_HTTP_PORT must be an integer, got 'eighty'" in done.stderr
    assert "Traceback" not in done.stderr
