"""The Triton image, rebuilt here as its Dockerfile builds it, loads lora_classifier and classifies, with and
without etcd.

As tests/images/test_api_image.py does for the shim: a clean venv from exactly the image's requirements file, with
the CPU torch wheel (pip's local wheel here, where the image takes the CUDA build), exactly the files its COPY
lines name, its ENV, and its CMD (the model repository is in the image).

What stands in for the image, and so what this does not prove:
- the base image's tritonserver (NGC 26.07, Triton 2.71, Python 3.12, CUDA 13) is the pip wheel's (nvidia-pytriton,
  Python 3.11) at TRITONSERVER_ROOT, with its libraries on LD_LIBRARY_PATH;
- the CMD runs with `--kind=cpu` instead of `--kind=gpu`, on loopback and free ports, with the image's absolute
  paths mapped under the test's folder; the watchdog, the launcher and the model run as written.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from testkit.etcd_harness import EtcdMembers
from testkit.process_harness import ManagedProcess, free_port
from testkit.triton_harness import REPO, LoraClient

from testkit.tolerance import TOLERANCE

from .test_api_image import Image, build_from_dockerfile, make_venv

DOCKERFILE = REPO / "scripts" / "docker" / "triton.Dockerfile"


def _load_run_triton():
    """scripts/run_triton.py from this checkout, for the wheel's tritonserver tree it prepares."""
    spec = importlib.util.spec_from_file_location("run_triton_for_images", REPO / "scripts" / "run_triton.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run_triton = _load_run_triton()
TOKEN = "image-test-token"
MODEL = "alpha"  # tests/conftest.py's MODELS
TEXTS = ["the image classifies this text", "and this one"]


@pytest.fixture(scope="module")
def triton_image(tmp_path_factory) -> tuple[Image, Path]:
    """The image's files under a root, and its venv made from its requirements."""
    work = tmp_path_factory.mktemp("triton-image")
    image = build_from_dockerfile(DOCKERFILE, work / "root")
    assert image.requirements.read_text() == (REPO / "scripts/docker/requirements-triton.txt").read_text()
    venv = image.workdir / "venv"  # where the Dockerfile makes it: /opt/lora/venv
    make_venv(venv, image.requirements)
    assert (image.workdir / "model_repository" / "lora_classifier" / "config.pbtxt").is_file(), "not in the image"
    return image, venv


def image_command(image: Image, ports: dict[str, int]) -> list[str]:
    """The CMD, its paths inside the image mapped under the root, on CPU, loopback and free ports."""
    mapped = []
    for argument in image.command:
        name, _, value = argument.partition("=")
        if argument.startswith("/"):
            argument = str(image.root / argument.lstrip("/"))
        elif name in ("--model-repository", "--run-dir"):
            argument = f"{name}={image.root / value.lstrip('/')}"
        elif name == "--kind":
            argument = "--kind=cpu"
        elif name == "--bind-address":
            argument = "--bind-address=127.0.0.1"
        elif name in ports:
            argument = f"{name}={ports[name]}"
        mapped.append(argument)
    return mapped


def image_env(image: Image, venv: Path) -> dict[str, str]:
    """The image's ENV lines, TRITONSERVER_ROOT pointing at the wheel's server (the stand-in for the base image's)."""
    env: dict[str, str] = {}
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.split()[1:]:
                key, _, value = pair.partition("=")
                env[key] = value
    assert env.get("TRITONSERVER_ROOT") == "/opt/tritonserver", env
    env["TRITONSERVER_ROOT"] = str(run_triton.prepare_runtime(REPO / "var" / "triton-runtime"))
    env["LD_LIBRARY_PATH"] = str(run_triton.wheel_site() / "nvidia_pytriton.libs")
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    env["HOME"] = str(image.root)
    return env


def start(image: Image, venv: Path, base_dir: Path, models: Path, log: Path, **settings: str):
    ports = {"--http-port": free_port(), "--grpc-port": free_port(), "--metrics-port": free_port()}
    env = {
        **image_env(image, venv),
        "BASE_MODEL_DIR": str(base_dir),
        "MODELS_ROOT": str(models),
        "STATE_DIR": str(log.parent / "state"),
        "CONTROL_TOKEN": TOKEN,
        "TRITON_INSTANCES": "1",
        **settings,
    }
    server = ManagedProcess(log)
    url = f"127.0.0.1:{ports['--http-port']}"
    server.start(image_command(image, ports), env, f"http://{url}/v2/models/lora_classifier/ready", 300, image.workdir)
    return server, url


def classify(url: str, output_dir: Path, reference) -> None:
    """Load MODEL, classify TEXTS, and compare with the reference computation."""
    client = LoraClient(url, TOKEN)
    try:
        answer = client.control({"op": "load", "model_dir": MODEL})
        assert answer.get("status") == "loaded", answer
        got = client.predict(TEXTS, [MODEL] * len(TEXTS))
    finally:
        client.close()
    expected = reference.probabilities(output_dir, TEXTS)
    for row, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(list(row.values()), want, atol=TOLERANCE, rtol=0)


def test_the_image_holds_the_cpu_torch_and_the_cluster_layers_packages(triton_image) -> None:
    _, venv = triton_image
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    names = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert names["torch"].startswith("2.13.0") and {"transformers", "peft", "etcd3gw", "requests"} <= set(names)
    assert "flask" not in names and "pytest" not in names


def test_tritonserver_loads_the_model_and_classifies_without_etcd(
    triton_image, tmp_path, base_dir, triton_models_root, reference
) -> None:
    image, venv = triton_image
    server, url = start(image, venv, base_dir, triton_models_root, tmp_path / "triton.log", ETCD_ENDPOINTS="")
    try:
        classify(url, triton_models_root / MODEL, reference)
        assert (tmp_path / "state" / "manifest.json").is_file()  # the desired state kept in STATE_DIR
    finally:
        server.stop()


def test_tritonserver_keeps_its_desired_state_in_etcd_with_etcd(
    triton_image, tmp_path, base_dir, triton_models_root, reference
) -> None:
    image, venv = triton_image
    with EtcdMembers(tmp_path / "etcd", count=1) as etcd:
        server, url = start(
            image, venv, base_dir, triton_models_root, tmp_path / "triton.log", ETCD_ENDPOINTS=etcd.endpoints[0]
        )
        try:
            classify(url, triton_models_root / MODEL, reference)
            answer = requests.post(
                f"{etcd.endpoints[0]}/v3/kv/range",
                json={"key": base64.b64encode(b"/lora-classifier/desired").decode()},
                timeout=10,
            ).json()
            assert answer.get("kvs"), answer  # the load went to etcd
            assert not (tmp_path / "state" / "manifest.json").exists()
        finally:
            server.stop()
