"""docker-compose.yml and the Dockerfiles: valid compose, only existing files copied, pins that agree."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess

import pytest
import yaml

from triton_harness import REPO

DOCKERFILES = {"triton": REPO / "scripts/docker/triton.Dockerfile", "api": REPO / "scripts/docker/api.Dockerfile"}


def compose_config() -> dict:
    """The compose file as docker-compose resolves it (Debian's docker-compose validates without an engine)."""
    done = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_file_is_valid_and_wires_triton_and_the_api():
    config = compose_config()
    triton, api = config["services"]["triton"], config["services"]["api"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    mounts = {v.split(":")[1]: v for v in triton["volumes"]} if isinstance(triton["volumes"][0], str) else {v["target"]: v for v in triton["volumes"]}
    assert set(mounts) >= {"/opt/lora/model_repository", "/models/base", "/models/outputs", "/var/lib/lora-classifier"}
    for target in ("/models/base", "/models/outputs", "/opt/lora/model_repository"):
        mount = mounts[target]
        assert (mount.endswith(":ro") if isinstance(mount, str) else mount.get("read_only")), f"{target} must be read-only"
    assert "lora-state" in config["volumes"]
    assert "health/ready" in " ".join(triton["healthcheck"]["test"])
    assert api["depends_on"]["triton"]["condition"] == "service_healthy"
    assert api["environment"]["TRITON_URL"] == "triton:8000"
    assert any(str(p.get("target", p)).endswith("8000") for p in api["ports"])


def test_every_env_default_is_documented_in_dot_env():
    compose = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+):-", compose))
    defined = {line.split("=", 1)[0] for line in (REPO / ".env").read_text().splitlines() if line and not line.startswith("#")}
    assert used <= defined, f"not in .env: {sorted(used - defined)}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_copy_only_files_that_exist(name):
    text = DOCKERFILES[name].read_text()
    copies = [shlex.split(line)[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"{DOCKERFILES[name].name} copies {source}, which does not exist"


def test_triton_image_matches_the_local_triton_and_the_api_image_has_no_torch():
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in DOCKERFILES["triton"].read_text()
    api_pins = pins(REPO / "scripts/docker/requirements-api.txt")
    assert "flask" in api_pins and not {"torch", "transformers", "peft"} & set(api_pins)
    assert "torch" in pins(REPO / "scripts/docker/requirements-triton.txt")


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            found[match.group(1).lower()] = match.group(3)
    return found


@pytest.mark.parametrize("image", ["requirements-triton.txt", "requirements-api.txt"])
def test_image_pins_agree_with_requirements(image):
    local, docker = pins(REPO / "requirements.txt"), pins(REPO / "scripts/docker" / image)
    assert docker and all(local.get(name) == version for name, version in docker.items()), (docker, local)


def test_the_launcher_writes_one_gpu_instance_group(tmp_path):
    spec = importlib.util.spec_from_file_location("run_triton", REPO / "scripts/run_triton.py")
    run_triton = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_triton)
    repository = run_triton.prepare_repository(REPO / "model_repository", tmp_path, instances=1, kind="gpu")
    config = (repository / "lora_classifier" / "config.pbtxt").read_text()
    assert "instance_group [ { count: 1, kind: KIND_GPU } ]" in config
    assert "KIND_CPU" not in config
