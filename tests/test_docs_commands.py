"""Every shell command the docs give is checked, so a broken one fails CI.

Commands are read from README.md and docs/*.md: the lines of ```bash / ```sh / ```console / ```shell blocks (only
the `$ ` lines where a block shows output), `$ ` lines outside blocks, a bare ``` block whose first line is a
command (docs/benchmarks.md's rerun block), and inline code that starts with a command (`make serve`,
`.venv/bin/python -m bench.e2e ...`). docs/benchmarks.md is generated; its figures are tables, not commands, and
its rerun commands are read like any other. Each command goes to the checker of its tool (CHECKS); a tool that
cannot run here has a checker that says what it checks instead. A command whose tool has none fails: every
command is checked or listed. Nothing here starts a server or changes the machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from lora_core.settings_registry import REGISTRY

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = {"bash", "sh", "console", "shell"}
# Inline code and bare blocks count as commands when they start with one of these.
COMMAND_START = re.compile(
    r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:make\b|\.venv/bin/python |python3? -m \w|curl |docker-compose )"
)
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    text: str
    where: str  # page:line

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def fence_of(line: str) -> tuple[str, str] | None:
    """(indent, info string) of a ``` line, else None."""
    m = re.match(r"^(\s*)```\s*([\w-]*)", line)
    return (m.group(1), m.group(2).lower()) if m else None


def join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1].rstrip())
            continue
        pending = None
        joined.append((number, text))
    if pending is not None:
        joined.append(pending)
    return joined


def block_commands(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """A shell block's commands: its `$ ` lines where it shows output, else every line but comments."""
    stripped = [(n, line.strip()) for n, line in block]
    if any(line.startswith("$ ") for _, line in stripped):
        keep: list[tuple[int, str]] = []
        inside = False
        for n, line in stripped:
            if line.startswith("$ "):
                inside = True
                keep.append((n, line[2:]))
            elif inside and keep and keep[-1][1].endswith("\\"):
                keep.append((n, line))
            else:
                inside = False
        return join_continuations(keep)
    return join_continuations([(n, line) for n, line in stripped if line and not line.startswith("#")])


def inline_commands(paragraph: list[tuple[int, str]]) -> list[tuple[int, str]]:
    text = " ".join(line.strip() for _, line in paragraph)
    found = []
    for span in re.findall(r"`([^`]+)`", text):
        span = " ".join(span.split())
        if COMMAND_START.match(span) and not re.fullmatch(r"python3? -m", span):
            line = next((n for n, raw in paragraph if span.split()[0] in raw), paragraph[0][0])
            found.append((line, span))
    return found


def page_commands(page: Path) -> list[Command]:
    name = page.relative_to(REPO).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    commands: list[tuple[int, str]] = []
    paragraph: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        fence = fence_of(lines[i])
        if fence is None:
            line = lines[i]
            if line.strip().startswith("$ "):
                commands.append((i + 1, line.strip()[2:]))
            if line.strip():
                paragraph.append((i + 1, line))
            else:
                commands += inline_commands(paragraph)
                paragraph = []
            i += 1
            continue
        commands += inline_commands(paragraph)
        paragraph = []
        block: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and fence_of(lines[i]) is None:
            block.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence
        first = next((line.strip() for _, line in block if line.strip()), "")
        if fence[1] in SHELL_FENCES or (fence[1] == "" and COMMAND_START.match(first)):
            commands += block_commands(block)
    commands += inline_commands(paragraph)
    return [Command(text, f"{name}:{n}") for n, text in commands]


def all_commands() -> list[Command]:
    seen: dict[str, Command] = {}
    for page in PAGES:
        for command in page_commands(page):
            seen.setdefault(command.text, command)
    return list(seen.values())


def substitutions(text: str) -> list[str]:
    """The commands inside $(...)."""
    return re.findall(r"\$\(([^()]*)\)", text)


def simple_commands(text: str) -> list[list[str]]:
    """The command lines of a shell line, split at && || ; |, without redirections, env assignments, sudo."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    parts: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in {"&&", "||", ";", "|"}:
            parts.append([])
        elif token in {">", ">>", "<", "2>"}:
            skip_next = True
        else:
            parts[-1].append(token)
    result = []
    for words in parts:
        while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
            words = words[1:]
        if words:
            result.append(words)
    return result


# ---------------------------------------------------------------------------------------------------------------
# make: the target exists. `make -n` prints the recipes and runs none (the Makefile has no `+` or $(MAKE) lines).


def check_make(words: list[str]) -> None:
    targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    variables = [w for w in words[1:] if "=" in w and not w.startswith("-")]
    done = subprocess.run(
        ["make", "-n", *targets, *variables], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"make -n {' '.join(targets)}: {done.stderr.strip()}"


# ---------------------------------------------------------------------------------------------------------------
# python -m X ...: X runs with --help and exits 0, and every --option the docs give is in its help. All modules
# run in one interpreter (torch is imported once, not twenty times: about 8 s instead of 60).

# Modules that take no arguments (their settings come from the environment): checked by importing them.
NO_ARGUMENTS = {"lora_cluster.node_agent": "settings from the environment (NodeAgentSettings); no argv"}

HELP_RUNNER = textwrap.dedent(
    """
    import contextlib, importlib, io, json, runpy, sys
    sys.path.insert(0, ".")
    results = {}
    for module, no_args in json.loads(sys.argv[1]):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                if no_args:
                    importlib.import_module(module)
                    code = 0
                else:
                    sys.argv = [module, "--help"]
                    try:
                        runpy.run_module(module, run_name="__main__", alter_sys=True)
                        code = "returned without exiting: --help not handled"
                    except SystemExit as stop:
                        code = stop.code or 0
        except BaseException as error:
            code = f"{type(error).__name__}: {error}"
        results[module] = [code, out.getvalue()]
    print(json.dumps(results))
    """
)


def python_invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """(module, args) of `python -m X args` / `python path.py args`, else None."""
    if not re.fullmatch(r"(\.venv/bin/)?python3?", words[0]) or len(words) < 2:
        return None
    if words[1] == "-m":
        return words[2], words[3:]
    if words[1].endswith(".py"):
        return words[1], words[2:]
    return None


@cache
def help_texts() -> dict[str, tuple[object, str]]:
    modules = set()
    for command in all_commands():
        for text in [command.text, *substitutions(command.text)]:
            for words in simple_commands(text):
                found = python_invocation(words)
                if found:
                    modules.add(found[0])
    wanted = [(m, m in NO_ARGUMENTS) for m in sorted(modules) if not m.endswith(".py")]
    done = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, json.dumps(wanted)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {module: (code, text) for module, (code, text) in json.loads(done.stdout.splitlines()[-1]).items()}


def check_python(words: list[str]) -> None:
    found = python_invocation(words)
    assert found, f"not a python -m / python script.py command: {words}"
    module, args = found
    if module.endswith(".py"):
        done = subprocess.run(
            [sys.executable, module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )
        code, text = done.returncode, done.stdout
    else:
        code, text = help_texts()[module]
    assert code == 0, f"{module} --help: {code}\n{text[-2000:]}"
    if module in NO_ARGUMENTS:
        assert not args, f"{module} takes no arguments ({NO_ARGUMENTS[module]})"
        return
    for option in [a.split("=", 1)[0] for a in args if a.startswith("--")]:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), f"{module} has no option {option}"
    if module == "pytest":
        for path in [a.split("::")[0] for a in args if not a.startswith("-")]:
            assert (REPO / path).exists(), f"no test file {path}"


# ---------------------------------------------------------------------------------------------------------------
# curl: the path is one api_shim/openapi.yaml defines, for that method, and the JSON body parses.


@cache
def api_paths() -> dict[str, set[str]]:
    spec = yaml.safe_load((REPO / "api_shim/openapi.yaml").read_text(encoding="utf-8"))
    return {path: {m.upper() for m in item} for path, item in spec["paths"].items()}


def check_curl(words: list[str]) -> None:
    method, body, urls = None, None, []
    options_with_value = {"-X", "-H", "-d", "--data", "--data-raw", "-o", "-w", "-u", "--header", "--request"}
    args = iter(words[1:])
    for word in args:
        if word in options_with_value:
            value = next(args)
            if word in {"-X", "--request"}:
                method = value
            elif word in {"-d", "--data", "--data-raw"}:
                body = value
        elif not word.startswith("-"):
            urls.append(word)
    assert len(urls) == 1, f"one URL expected: {urls}"
    url = urlsplit(urls[0] if "://" in urls[0] else "http://" + urls[0])
    method = method or ("POST" if body is not None else "GET")
    assert url.path in api_paths(), f"{url.path} is not a path of api_shim/openapi.yaml"
    assert method in api_paths()[url.path], f"{method} {url.path} is not in api_shim/openapi.yaml"
    if body is not None:
        json.loads(body)


# ---------------------------------------------------------------------------------------------------------------
# docker-compose: Debian's docker-compose (a Makefile system package) resolves the file without an engine; the
# subcommand is one it has, and the services, profile and build arguments named exist.

COMPOSE_ENV = {  # what the files require; deploy/compose's as tests/test_deployment.py sets them
    "CONTROL_TOKEN": "a-long-random-secret",
    "CONTROL_PLANE_HOST": "10.0.0.1",
    "ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.1:2389,http://10.0.0.1:2399",
    "ETCD_NODE_PASSWORD": "node-secret",
    "ETCD_SHIM_PASSWORD": "shim-secret",
    "NODE_ID": "node0",
    "NODE_ADDRESS": "10.0.0.11",
    "BALANCER": "10.0.0.1",
}
COMPOSE_SUBCOMMANDS = {"up", "down", "ps", "logs", "build", "config", "restart", "stop", "exec", "pull"}


@cache
def compose_config(file: str, profile: str | None) -> dict:
    profile_args = ["--profile", profile] if profile else []
    done = subprocess.run(
        ["docker-compose", "-f", file, *profile_args, "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **COMPOSE_ENV},
        check=False,
    )
    assert done.returncode == 0, f"docker-compose -f {file} config: {done.stderr}"
    return yaml.safe_load(done.stdout)


def check_docker_compose(words: list[str]) -> None:
    file, profile, i = "docker-compose.yml", None, 1
    while i < len(words) and words[i].startswith("-"):
        if words[i] == "-f":
            file = words[i + 1]
        elif words[i] == "--profile":
            profile = words[i + 1]
        i += 2
    assert (REPO / file).is_file(), f"no compose file {file}"
    subcommand, rest = words[i], words[i + 1 :]
    assert subcommand in COMPOSE_SUBCOMMANDS, f"docker-compose {subcommand}?"
    config = compose_config(file, profile)
    services = config["services"]
    if profile:
        assert any(profile in s.get("profiles", []) for s in services.values()), f"no profile {profile}"
    build_args, named = [], []
    args = iter(rest)
    for word in args:
        if word == "--build-arg":
            build_args.append(next(args).split("=", 1)[0])
        elif not word.startswith("-"):
            named.append(word)
    for service in named if subcommand != "exec" else named[:1]:
        assert service in services, f"no service {service} in {file}"
    for name in build_args:
        for service in named or list(services):
            build = services[service].get("build")
            if build:
                dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
                assert re.search(rf"^ARG {name}\b", dockerfile.read_text(), re.M), f"{dockerfile} has no ARG {name}"


# ---------------------------------------------------------------------------------------------------------------
# kubectl: no cluster here. The files applied exist (tests/test_deployment.py validates them against Kubernetes'
# schemas), the namespace is the manifests', and each Secret made is one the manifests use, with every key they
# read from it (optional ones aside).


@cache
def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted((REPO / "deploy/k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def walk(node: object):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@cache
def secrets_used() -> dict[str, set[str]]:
    """Secret name -> the keys the manifests need from it."""
    used: dict[str, set[str]] = {}
    for doc in k8s_documents():
        for node in walk(doc):
            if isinstance(node, dict) and "secretKeyRef" in node:
                ref = node["secretKeyRef"]
                used.setdefault(ref["name"], set())
                if not ref.get("optional"):
                    used[ref["name"]].add(ref["key"])
            if isinstance(node, dict) and "containers" in node:  # a pod spec: the files read from secret volumes
                secret_volumes = {
                    v["name"]: v["secret"]["secretName"] for v in node.get("volumes", []) if "secret" in v
                }
                for container in node["containers"]:
                    strings = [s for s in walk(container) if isinstance(s, str)]
                    for mount in container.get("volumeMounts", []):
                        if mount["name"] in secret_volumes:
                            keys = used.setdefault(secret_volumes[mount["name"]], set())
                            prefix = mount["mountPath"].rstrip("/") + "/"
                            keys |= {k for s in strings for k in re.findall(re.escape(prefix) + r"([\w.-]+)", s)}
    return used


def check_kubectl(words: list[str]) -> None:
    args = words[1:]
    if "-n" in args:
        namespace = args[args.index("-n") + 1]
        names = {d["metadata"]["name"] for d in k8s_documents() if d["kind"] == "Namespace"}
        assert namespace in names, f"namespace {namespace} is not deploy/k8s's ({names})"
        del args[args.index("-n") : args.index("-n") + 2]
    if args[0] == "apply":
        assert args[1] == "-f" and (REPO / args[2]).exists(), f"kubectl apply of a missing file: {args}"
        return
    assert args[:3] == ["create", "secret", "generic"], f"kubectl {args}?"
    name, keys = args[3], set()
    for arg in args[4:]:
        kind, _, value = arg.partition("=")
        assert kind in {"--from-literal", "--from-file"}, arg
        keys.add(value.split("=", 1)[0] if "=" in value else Path(value).name)
    assert name in secrets_used(), f"no manifest uses the Secret {name}"
    assert secrets_used()[name] <= keys, f"{name} lacks {sorted(secrets_used()[name] - keys)}"


# ---------------------------------------------------------------------------------------------------------------
# etcdctl: not installed (Debian's etcd-client is not a Makefile system package). The roles grant the prefix the
# settings registry gives as ETCD_PREFIX's default; the users are root and the ETCD_USER values the deployments
# give (lora-node, lora-shim).


@cache
def etcd_users() -> set[str]:
    users = {"root"}
    for doc in k8s_documents():
        for node in walk(doc):
            if isinstance(node, dict) and node.get("name") == "ETCD_USER" and "value" in node:
                users.add(node["value"])
    for compose in (REPO / "deploy/compose").glob("*.yml"):
        users |= set(re.findall(r"ETCD_USER: \$\{\w+:-([\w-]+)\}", compose.read_text()))
    return users


def check_etcdctl(words: list[str]) -> None:
    args = [w for w in words[1:] if not w.startswith("--") or w == "--prefix=true"]
    prefix = REGISTRY["ETCD_PREFIX"].default
    if args[:2] == ["auth", "enable"]:
        return
    if args[:2] == ["role", "add"]:
        return
    if args[:2] == ["role", "grant-permission"]:
        assert args[-1] == prefix, f"the service's prefix is {prefix}"
        return
    if args[:2] in (["user", "add"], ["user", "grant-role"]):
        assert args[2] in etcd_users(), f"{args[2]} is no deployment's ETCD_USER ({sorted(etcd_users())})"
        return
    raise AssertionError(f"etcdctl {args}?")


# ---------------------------------------------------------------------------------------------------------------
# The README's GPU-node steps edit .env with sed: the keys exist in .env (test_the_gpu_node_steps_make_a_valid_
# configuration below runs them on a copy). openssl rand runs here (no effect). cp: the destination folder exists.


def check_sed(words: list[str]) -> None:
    assert words[1] == "-i" and words[-1] == ".env", f"only in-place edits of .env are documented: {words}"
    defined = {line.split("=", 1)[0] for line in (REPO / ".env").read_text().splitlines() if "=" in line}
    for key in re.findall(r"\^(\w+)=", words[2]):
        assert key in defined, f".env has no {key}"


def check_openssl(words: list[str]) -> None:
    assert words[1] == "rand", f"only openssl rand is documented: {words}"
    done = subprocess.run(words, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def check_cp(words: list[str]) -> None:
    assert (REPO / words[-1]).parent.is_dir(), f"cp into a missing folder: {words[-1]}"


# The host setup for the NVIDIA Container Toolkit changes the machine or needs a GPU and a Docker engine: not run.
# Checked instead: each command is exactly one of the steps of NVIDIA's install guide (docs.nvidia.com, "Installing
# the NVIDIA Container Toolkit" and its sample workload), so an edit that departs from the guide fails here.
HOST_SETUP = {
    "apt-get install -y nvidia-container-toolkit",
    "nvidia-ctk runtime configure --runtime=docker",
    "systemctl restart docker",
    "docker run --rm --runtime=nvidia --gpus all ubuntu nvidia-smi",
}


def check_host_setup(words: list[str]) -> None:
    assert " ".join(words) in HOST_SETUP, f"not a step of NVIDIA's install guide: {' '.join(words)}"


CHECKS: dict[str, Callable[[list[str]], None]] = {
    "make": check_make,
    "python": check_python,
    "python3": check_python,
    ".venv/bin/python": check_python,
    "curl": check_curl,
    "docker-compose": check_docker_compose,
    "kubectl": check_kubectl,
    "etcdctl": check_etcdctl,
    "sed": check_sed,
    "openssl": check_openssl,
    "cp": check_cp,
    "apt-get": check_host_setup,
    "nvidia-ctk": check_host_setup,
    "systemctl": check_host_setup,
    "docker": check_host_setup,
}

COMMANDS = all_commands()


def test_the_docs_give_commands():
    texts = {c.text for c in COMMANDS}
    assert len(COMMANDS) > 40
    assert {"make serve", "make test", "docker-compose up -d --build"} <= texts


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_command_is_checked_or_listed(command: Command):
    for text in [command.text, *substitutions(command.text)]:
        for words in simple_commands(text):
            tool = words[0]
            assert tool in CHECKS, f"{command}: no check for {tool}; add one to CHECKS"
            CHECKS[tool](words)


def test_the_gpu_node_steps_make_a_valid_configuration(tmp_path):
    """README's .env edits, run on a copy of .env, give a file docker-compose accepts with no CONTROL_TOKEN set
    elsewhere: the secret, and the host folders the steps name."""
    readme = [c.text for c in page_commands(REPO / "README.md")]
    edits = [t for t in readme if t.startswith("sed -i") and t.endswith(" .env")]
    assert len(edits) >= 2
    (tmp_path / ".env").write_text((REPO / ".env").read_text())
    for edit in edits:
        subprocess.run(["bash", "-c", edit], cwd=tmp_path, check=True, timeout=30)
    environ = {k: v for k, v in os.environ.items() if k not in {"CONTROL_TOKEN", "BASE_MODEL_HOST_DIR"}}
    done = subprocess.run(
        ["docker-compose", "--env-file", str(tmp_path / ".env"), "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    triton = yaml.safe_load(done.stdout)["services"]["triton"]
    assert re.fullmatch(r"[0-9a-f]{64}", triton["environment"]["CONTROL_TOKEN"])
    mounts = " ".join(str(v) for v in triton["volumes"])
    assert "/srv/models/base" in mounts and "/srv/training-outputs" in mounts


# ---------------------------------------------------------------------------------------------------------------
# Links between the pages resolve, and every page under docs/ is reached from the README.


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page: Path):
    for link in links(page):
        if re.match(r"^[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: {link} does not exist"
        if anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: no heading #{anchor} in {path.name}"


def test_every_docs_page_is_reached_from_the_readme():
    reached, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        for link in links(page):
            target = (page.parent / link.partition("#")[0]).resolve()
            if target.suffix == ".md" and target.exists() and target not in reached:
                reached.add(target)
                todo.append(target)
    missing = [p.name for p in PAGES[1:] if p.resolve() not in reached]
    assert not missing, f"not linked from the README or a page it links: {missing}"
