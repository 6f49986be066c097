"""The API image, rebuilt here as its Dockerfile builds it, starts and serves, with and without etcd.

No Docker runs on these machines, so the test follows scripts/docker/api.Dockerfile itself: a clean venv from
exactly the image's requirements file (on /usr/bin/python3, 3.11 as the image's python:3.11-slim), exactly the
files its COPY lines name, laid out under its WORKDIR, and the command of its CMD line, with an environment holding
nothing of the development venv's. What this does not prove: the image's own base layers and its `USER nobody`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from lora_core.metric_names import LORA_API_BACKEND_READY
from testkit.etcd_harness import EtcdMembers
from testkit.process_harness import ManagedProcess, free_port
from testkit.triton_harness import REPO

DOCKERFILE = REPO / "scripts" / "docker" / "api.Dockerfile"


@dataclass(frozen=True)
class Image:
    """What a Dockerfile puts together: its requirements file, its files under a root, its working directory and
    its command."""

    root: Path
    workdir: Path
    command: list[str]
    requirements: Path


def build_from_dockerfile(dockerfile: Path, root: Path) -> Image:
    """The Dockerfile's COPY lines carried out under `root` (absolute paths inside the image map below it), its
    WORKDIR and CMD read. The requirements file is the one a RUN line installs with `pip install -r`."""
    workdir = Path("/")
    command: list[str] = []
    requirements: Path | None = None
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():  # continuation lines joined
        if line.startswith("WORKDIR "):
            workdir = workdir / line.split(maxsplit=1)[1]
        elif line.startswith("COPY "):
            *sources, destination = shlex.split(line)[1:]
            target = root / (workdir / destination).relative_to("/")
            for source in sources:
                path = REPO / source
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
                elif destination.endswith("/"):  # into that directory
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target)
        elif line.startswith("RUN ") and "pip install" in line and " -r " in line:
            words = shlex.split(line)
            requirements = (workdir / words[words.index("-r") + 1]).relative_to("/")
        elif line.startswith("CMD "):
            command = json.loads(line[len("CMD ") :])
    assert command and requirements is not None, f"{dockerfile.name}: no CMD, or no pip install -r"
    return Image(root, root / workdir.relative_to("/"), command, root / requirements)


def make_venv(venv: Path, requirements: Path) -> None:
    """A clean venv on /usr/bin/python3 with exactly `requirements` installed, as the image's RUN line does."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]


@pytest.fixture(scope="module")
def api_image(tmp_path_factory) -> tuple[Image, Path]:
    """The image's files, and a venv made from its requirements file alone."""
    work = tmp_path_factory.mktemp("api-image")
    image = build_from_dockerfile(DOCKERFILE, work / "root")
    assert image.requirements.read_text() == (REPO / "scripts/docker/requirements-api.txt").read_text()
    venv = work / "venv"
    make_venv(venv, image.requirements)
    return image, venv


def start(image: Image, venv: Path, log: Path, **settings: str) -> tuple[ManagedProcess, str]:
    """The image's CMD, on its files and venv alone: no PYTHONPATH, nothing of the development venv."""
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(image.root),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "TRITON_URL": f"127.0.0.1:{free_port()}",  # no Triton: what is checked is that the shim starts and answers
        "GUNICORN_WORKERS": "2",
        **settings,
    }
    server = ManagedProcess(log)
    base = f"http://127.0.0.1:{port}/api/v1"
    server.start(image.command, env, f"{base}/health/live", timeout=60, cwd=image.workdir)
    return server, base


def test_the_image_holds_no_torch_and_no_package_of_the_development_venv(api_image) -> None:
    _, venv = api_image
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "torch" not in names and "pytest" not in names
    assert {"flask", "gunicorn", "etcd3gw"} <= names


def test_the_shim_starts_and_answers_without_etcd(api_image, tmp_path) -> None:
    image, venv = api_image
    server, base = start(image, venv, tmp_path / "shim.log", ETCD_ENDPOINTS="")
    try:
        assert requests.get(f"{base}/health/live", timeout=10).json() == {"status": "live"}
        assert requests.get(f"{base}/openapi.json", timeout=10).status_code == 200
        # Triton is absent: the contract's answer, not a crash
        ready = requests.get(f"{base}/health/ready", timeout=30)
        assert ready.status_code == 503 and ready.json()["error"] == "backend_unavailable"
        metrics = requests.get(f"{base.removesuffix('/api/v1')}/metrics", timeout=10)
        assert metrics.status_code == 200 and f"{LORA_API_BACKEND_READY} 0.0" in metrics.text
    finally:
        server.stop()
    assert "Traceback" not in server.log_tail(400)


def test_the_shim_starts_and_reads_the_cluster_with_etcd(api_image, tmp_path) -> None:
    image, venv = api_image
    with EtcdMembers(tmp_path / "etcd", count=1) as etcd:
        server, base = start(image, venv, tmp_path / "shim.log", ETCD_ENDPOINTS=etcd.endpoints[0])
        try:
            assert requests.get(f"{base}/health/live", timeout=10).status_code == 200
            status = requests.get(f"{base}/inference/status", timeout=30)
            assert status.status_code == 200, status.text
            body = status.json()  # read from etcd, where no node has registered
            assert body["nodes"] == [] and body["message"] == "no node is registered", body
        finally:
            server.stop()
    assert "Traceback" not in server.log_tail(400)


def test_the_reading_of_the_dockerfile_follows_it(tmp_path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim\nWORKDIR /opt/app\nCOPY scripts/docker/requirements-api.txt reqs.txt\n"
        "RUN pip install -r reqs.txt\nCOPY lora_core/ core/\nCOPY scripts/die_with_parent.py /usr/local/bin/\n"
        'CMD ["python", "-m", "core"]\n'
    )
    image = build_from_dockerfile(dockerfile, tmp_path / "root")
    assert image.workdir == tmp_path / "root" / "opt" / "app"
    assert image.requirements == image.workdir / "reqs.txt" and image.requirements.is_file()
    assert (image.workdir / "core" / "errors.py").is_file()
    assert (tmp_path / "root" / "usr" / "local" / "bin" / "die_with_parent.py").is_file()
    assert image.command == ["python", "-m", "core"]  # the CMD as written
    assert sorted(os.listdir(image.workdir)) == ["core", "reqs.txt"]  # nothing it does not copy
