"""docker-compose.yml and the Dockerfiles: valid compose, only existing files copied, pins that agree."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from testkit.triton_harness import REPO

DOCKERFILES = {"triton": REPO / "scripts/docker/triton.Dockerfile", "api": REPO / "scripts/docker/api.Dockerfile"}


def run_compose_config(**env: str) -> subprocess.CompletedProcess:
    """docker-compose's own resolution of the file (Debian's docker-compose validates without an engine)."""
    environ = {k: v for k, v in os.environ.items() if k != "CONTROL_TOKEN"} | env
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )


def compose_config() -> dict:
    done = run_compose_config(CONTROL_TOKEN="a-long-random-secret")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_refuses_to_start_without_a_control_token():
    done = run_compose_config()
    assert done.returncode != 0 and "set CONTROL_TOKEN in .env" in done.stderr, done.stderr


def test_compose_keeps_the_promises_of_make_serve():
    config = compose_config()
    triton, api = config["services"]["triton"], config["services"]["api"]
    assert triton["restart"] == api["restart"] == "unless-stopped"
    assert "health/ready" in " ".join(triton["healthcheck"]["test"]) and "health/live" in " ".join(
        api["healthcheck"]["test"]
    )
    assert api["depends_on"]["triton"]["condition"] == "service_started"  # the shim does not wait for Triton
    assert "ports" not in triton  # Triton is reached through the shim only
    assert triton["environment"]["CONTROL_TOKEN"] == api["environment"]["CONTROL_TOKEN"] == "a-long-random-secret"
    assert "--watchdog" in DOCKERFILES["triton"].read_text() and "TRITON_HANG_TIMEOUT_S" in triton["environment"]
    assert "--bind-address=0.0.0.0" in DOCKERFILES["triton"].read_text()


def test_compose_file_is_valid_and_wires_triton_and_the_api():
    config = compose_config()
    triton, api = config["services"]["triton"], config["services"]["api"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    mounts = (
        {v.split(":")[1]: v for v in triton["volumes"]}
        if isinstance(triton["volumes"][0], str)
        else {v["target"]: v for v in triton["volumes"]}
    )
    assert set(mounts) >= {"/opt/lora/model_repository", "/models/base", "/models/outputs", "/var/lib/lora-classifier"}
    for target in ("/models/base", "/models/outputs", "/opt/lora/model_repository"):
        mount = mounts[target]
        assert mount.endswith(":ro") if isinstance(mount, str) else mount.get("read_only"), (
            f"{target} must be read-only"
        )
    assert "lora-state" in config["volumes"]
    assert api["environment"]["TRITON_URL"] == "triton:8000"
    assert any(str(p.get("target", p)).endswith("8000") for p in api["ports"])


def test_every_env_default_is_documented_in_dot_env():
    compose = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+):-", compose))
    defined = {
        line.split("=", 1)[0] for line in (REPO / ".env").read_text().splitlines() if line and not line.startswith("#")
    }
    assert used <= defined, f"not in .env: {sorted(used - defined)}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_copy_only_files_that_exist(name):
    text = DOCKERFILES[name].read_text()
    copies = [shlex.split(line)[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"{DOCKERFILES[name].name} copies {source}, which does not exist"


# Run inside a folder holding only what api.Dockerfile copies, with torch and the engine made unimportable, and
# the cluster layer's packages too: without ETCD_ENDPOINTS the shim must neither need nor import them.
_IMPORT_AS_IN_THE_API_IMAGE = """
import importlib.abc, sys
class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "peft", "safetensors", "adapter_manager", "etcd3gw"}:
            raise ImportError(f"{name} is not in the API image, or not needed without ETCD_ENDPOINTS")
sys.meta_path.insert(0, NotInTheImage())
import api_shim.wsgi
print(" ".join(sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0].startswith(("api_shim", "lora_"))})))
"""


def test_the_api_image_holds_whole_packages_and_the_shim_imports_without_torch_or_the_cluster_layer(tmp_path):
    copies = [shlex.split(line)[1:] for line in DOCKERFILES["api"].read_text().splitlines() if line.startswith("COPY ")]
    packages = [source for *sources, _ in copies for source in sources if (REPO / source).is_dir()]
    assert sorted(packages) == ["api_shim/", "lora_cluster/", "lora_core/"], "whole packages, and only these"
    for package in packages:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ETCD_ENDPOINTS": "", "ADMISSION_MAX_WAIT_S": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_AS_IN_THE_API_IMAGE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["api_shim", "lora_core"], "the cluster layer imported without ETCD_ENDPOINTS"


def test_triton_image_is_past_the_known_vulnerabilities_and_the_api_image_has_no_torch():
    # 26.07 (Triton 2.71): fixed CVE-2025-23310/23311/23319/23320/23334 (25.07), CVE-2025-33201 (25.10) and
    # the 2026 bulletins (26.03); the README's Security section keeps the list.
    assert "FROM nvcr.io/nvidia/tritonserver:26.07-py3" in DOCKERFILES["triton"].read_text()
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


def run_triton_module():
    spec = importlib.util.spec_from_file_location("run_triton", REPO / "scripts/run_triton.py")
    run_triton = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_triton)
    return run_triton


def test_the_launcher_writes_one_gpu_instance_group(tmp_path):
    repository = run_triton_module().prepare_repository(REPO / "model_repository", tmp_path, instances=1, kind="gpu")
    config = (repository / "lora_classifier" / "config.pbtxt").read_text()
    assert "instance_group [ { count: 1, kind: KIND_GPU } ]" in config
    assert "KIND_CPU" not in config
    assert "default_queue_policy { max_queue_size: 256 }" in config  # the default, untouched


def test_the_launcher_sets_the_predicts_queue_bound_and_leaves_controls_unbounded(tmp_path):
    run_triton = run_triton_module()
    repository = run_triton.prepare_repository(REPO / "model_repository", tmp_path, 1, "cpu", max_queue_size=7)
    config = (repository / "lora_classifier" / "config.pbtxt").read_text()
    assert "default_queue_policy { max_queue_size: 7 }" in config
    assert "priority_queue_policy { key: 1, value: { max_queue_size: 0 } }" in config
    with pytest.raises(argparse.ArgumentTypeError):
        run_triton.queue_size("-1")


# The CUDA each NGC Triton release is built on (its release notes): the image's torch must match its major.
NGC_CUDA = {"26.02": "13.1.1", "26.06": "13.3.0", "26.07": "13.3.1"}


def test_the_triton_images_torch_matches_its_cuda():
    dockerfile = DOCKERFILES["triton"].read_text()
    release = re.search(r"^FROM nvcr.io/nvidia/tritonserver:(\d+\.\d+)-py3$", dockerfile, re.M).group(1)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    assert args["TORCH_CUDA"] == NGC_CUDA[release].split(".")[0]
    assert args["TORCH_VERSION"] == pins(REPO / "requirements.txt")["torch"]
    wheel_index = re.search(r"/whl/cu(\d+?)(\d)$", args["TORCH_INDEX_URL"])  # download.pytorch.org/whl/cu130
    assert args["TORCH_INDEX_URL"] == "https://pypi.org/simple" or wheel_index.group(1) == args["TORCH_CUDA"]
    assert "${TORCH_CUDA}" in dockerfile.split("ARG TORCH_CUDA", 1)[1]  # the build checks what it installed


# ------------------------------------------------------------------ several nodes: compose and Kubernetes

DEPLOY = REPO / "deploy"
EXAMPLE_NODES = [("node0", "10.0.0.11:8000"), ("node1", "10.0.0.12:8000"), ("node2", "10.0.0.13:8000")]
MULTI_NODE_ENV = {
    "CONTROL_PLANE_HOST": "10.0.0.1",
    "ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.1:2389,http://10.0.0.1:2399",
    "ETCD_NODE_PASSWORD": "node-secret",
    "ETCD_SHIM_PASSWORD": "shim-secret",
    "CONTROL_TOKEN": "a-long-random-secret",
    "NODE_ID": "node0",
    "NODE_ADDRESS": "10.0.0.11",
    "BALANCER": "10.0.0.1",
}


def resolved(compose_file: str) -> dict:
    done = subprocess.run(
        ["docker-compose", "-f", compose_file, "config"],
        cwd=DEPLOY / "compose",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **MULTI_NODE_ENV},
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_the_control_plane_compose_file_runs_three_etcd_members_and_the_balancer():
    services = resolved("control-plane.yml")["services"]
    assert sorted(services) == ["etcd0", "etcd1", "etcd2", "haproxy"]
    for name in ("etcd0", "etcd1", "etcd2"):
        env = services[name]["environment"]
        assert env["ETCD_NAME"] == name and env["ETCD_AUTO_COMPACTION_MODE"] == "periodic"
        assert env["ETCD_INITIAL_CLUSTER"].count("=http://") == 3
    assert (DEPLOY / "haproxy" / "haproxy.cfg").exists()


def test_a_gpu_node_compose_file_points_triton_the_agent_and_the_shim_at_the_control_plane():
    services = resolved("gpu-node.yml")["services"]
    triton, agent, api = services["triton"], services["node-agent"], services["api"]
    assert triton["environment"]["ETCD_ENDPOINTS"] == MULTI_NODE_ENV["ETCD_ENDPOINTS"]
    assert (
        agent["command"][-1] == "lora_cluster.node_agent"
        and agent["environment"]["NODE_TRITON_URL"] == "10.0.0.11:8000"
    )
    assert (api["environment"]["TRITON_URL"], api["environment"]["TRITON_CONTROL_URL"]) == (
        "10.0.0.1:9000",
        "10.0.0.1:9001",
    )
    assert api["environment"]["ETCD_USER"] != triton["environment"]["ETCD_USER"]  # the shim only reads
    assert all(s["restart"] == "unless-stopped" for s in services.values())


def test_the_kubernetes_manifests_validate():
    import kubernetes_validate  # PyPI, pinned in requirements.txt

    kinds = []
    for manifest in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text()):
            kubernetes_validate.validate(document, "1.30.0", strict=True)
            kinds.append((document["kind"], document["metadata"]["name"]))
    assert ("StatefulSet", "etcd") in kinds and ("Deployment", "triton") in kinds and ("Deployment", "api") in kinds
    assert ("Service", "triton") in kinds and ("Deployment", "haproxy") in kinds


def test_the_haproxy_configurations_are_the_renderers_and_haproxy_accepts_them():
    from lora_cluster.haproxy_config import render, render_discovered

    k8s = next(yaml.safe_load_all((DEPLOY / "k8s" / "haproxy.yaml").read_text()))
    assert k8s["data"]["haproxy.cfg"] == render_discovered("*:9000", "*:9001", "triton.lora.svc.cluster.local:8000", 16)
    example = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert example == render("*:9000", "*:9001", EXAMPLE_NODES)
    for text in (k8s["data"]["haproxy.cfg"], example):
        config = REPO / "var" / "haproxy-check.cfg"
        config.parent.mkdir(exist_ok=True)
        config.write_text(text)
        done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


def _k8s_documents() -> list[dict]:
    return [d for m in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(m.read_text()) if d]


def _pod_specs(documents: list[dict]) -> list[dict]:
    return [d["spec"]["template"]["spec"] for d in documents if d["kind"] in ("Deployment", "StatefulSet")]


def test_the_kubernetes_manifests_define_what_they_use():
    documents = _k8s_documents()
    assert {"kind": "Namespace", "name": "lora"} in [
        {"kind": d["kind"], "name": d["metadata"]["name"]} for d in documents
    ]
    assert all(d["metadata"].get("namespace") == "lora" for d in documents if d["kind"] != "Namespace")
    claims = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    for spec in _pod_specs(documents):
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
        mounts = {m["name"]: m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert set(mounts) <= {v["name"] for v in spec.get("volumes", [])} | {"data"}  # data: the claim template


def test_every_etcd_client_in_kubernetes_speaks_tls_with_a_certificate_of_its_own():
    documents = _k8s_documents()
    clients = 0
    for spec in _pod_specs(documents):
        for container in spec["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "ETCD_ENDPOINTS" not in env:
                continue
            clients += 1
            assert all(e.startswith("https://") for e in env["ETCD_ENDPOINTS"].split(",")), container["name"]
            mounted = [m["mountPath"] for m in container.get("volumeMounts", [])]
            for name in ("ETCD_CA_CERT", "ETCD_CERT", "ETCD_KEY"):
                assert env.get(name) and any(env[name].startswith(path + "/") for path in mounted), (name, container)
    assert clients == 3  # tritonserver, its node agent, the shim
    (etcd,) = [d for d in documents if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "etcd"]
    command = etcd["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--client-cert-auth" in command and "--peer-client-cert-auth" in command
    assert not [flag for flag in command if "http://" in flag and not flag.startswith("--listen-metrics-urls")]


def test_the_triton_pod_finds_the_model_repository_in_its_image():
    copies = [
        shlex.split(line)[1:] for line in DOCKERFILES["triton"].read_text().splitlines() if line.startswith("COPY ")
    ]
    assert ["model_repository/", "/opt/lora/model_repository/"] in copies
    assert "--model-repository=/opt/lora/model_repository" in DOCKERFILES["triton"].read_text()
