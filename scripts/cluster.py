"""`make cluster`: several nodes on this machine, supervised, in the foreground: etcd with 3 members
(authentication on), NODES tritonservers each with its node agent, HAProxy, and the REST shim on API_PORT.

It takes `make serve`'s settings: the demo when neither BASE_MODEL_DIR nor MODELS_ROOT is set (its models are
loaded once the service is ready), else those two. Everything it keeps goes under STATE_DIR (default
var/cluster): the etcd members' data, each node's run directory, HAProxy's configuration, and the generated
secrets (cluster-secrets.json, mode 0600: etcd's passwords and the control token).

Each node is supervised as `make serve` supervises Triton (scripts/supervisor.py): restarted when it dies or
hangs, its agent beside it; so are the etcd members, HAProxy and the shim. Ctrl-C or SIGTERM stops the shim
and HAProxy, then the nodes (each agent first: the node leaves the registry), then etcd, and leaves no process.

Reads NODES (3), API_PORT (8000), API_KEY, BASE_MODEL_DIR, MODELS_ROOT, STATE_DIR, TRITON_INSTANCES, the first
ports CLUSTER_ETCD_PORT (23790: client and peer port of each member in turn), CLUSTER_TRITON_PORT (8100: http,
grpc, metrics of node i at +10i) and CLUSTER_BALANCER_PORT (9000: data, then control), TRITON_HANG_TIMEOUT_S,
TRITON_START_TIMEOUT_S and DRAIN_TIMEOUT_S.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

from serve import REPO, demo_or_given_models, post, settled, shim_child, supervision_settings, triton_child
from supervisor import Child, StopFlag, Supervisor, log

sys.path.insert(0, str(REPO))  # lora_core: the etcd client and HAProxy's configuration (torch-free)

from lora_cluster.etcd import enable_auth
from lora_cluster.haproxy_config import render
from lora_core.settings import read

PREFIX = "/lora-classifier/"
SECRETS_FILE = "cluster-secrets.json"
CONTROL_READY_S = 30.0  # how long the ready line waits for HAProxy's control frontend to reach a node


def cluster_secrets(state_dir: Path) -> tuple[dict[str, str], bool]:
    """The cluster's secrets (kept in STATE_DIR, mode 0600), and whether they were made just now."""
    path = state_dir / SECRETS_FILE
    if path.exists():
        os.chmod(path, 0o600)
        return json.loads(path.read_text()), False
    made = {name: secrets.token_urlsafe(24) for name in ("root", "node", "shim", "control_token")}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(made, handle)
    return made, True


def port(env: dict[str, str], name: str) -> int:
    value: int = read(name, env)
    if not 0 < value < 65536:
        raise ValueError(f"{name} must be a port number, got {value}")
    return value


def main() -> int:
    env = dict(os.environ)
    demo = demo_or_given_models(env)
    if demo is None:
        return 2
    try:
        nodes = read("NODES", env)
        etcd_port, triton_port, balancer_port = (
            port(env, name) for name in ("CLUSTER_ETCD_PORT", "CLUSTER_TRITON_PORT", "CLUSTER_BALANCER_PORT")
        )
        api_port = settled(env, "API_PORT")
    except ValueError as exc:
        sys.exit(f"cluster: {exc}")
    if not 1 <= nodes <= 16:
        sys.exit(f"cluster: NODES must be from 1 to 16, got {nodes}")
    state_dir = Path(env.get("STATE_DIR") or REPO / "var" / "cluster").resolve()  # not the image's /var/lib/...
    state_dir.mkdir(parents=True, exist_ok=True)
    fresh = not (state_dir / "etcd" / "etcd0").exists()  # a new etcd: its authentication is set up below
    keys, made = cluster_secrets(state_dir)
    if made and not fresh:
        sys.exit(f"cluster: {state_dir / 'etcd'} exists but its secrets are gone; remove it to start a new cluster")
    # etcd keeps its members' peer URLs in its data: started on other ports, the members never find each other.
    ports_file = state_dir / "etcd" / "port"
    made_on = ports_file.read_text().strip() if not fresh and ports_file.exists() else str(etcd_port)
    if made_on != str(etcd_port):
        sys.exit(
            f"cluster: the etcd in {state_dir / 'etcd'} was made on CLUSTER_ETCD_PORT={made_on}; start it on that "
            f"port again, or remove {state_dir} to start a new cluster on {etcd_port}"
        )
    ports_file.parent.mkdir(exist_ok=True)
    ports_file.write_text(f"{etcd_port}\n")
    settings = supervision_settings(env)

    # ------------------------------------------------------------------------------------- etcd
    names = [f"etcd{i}" for i in range(3)]
    clients = [f"http://127.0.0.1:{etcd_port + 2 * i}" for i in range(3)]
    peers = [f"http://127.0.0.1:{etcd_port + 2 * i + 1}" for i in range(3)]
    initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    etcd = [
        Child(
            name,
            [
                "etcd",
                f"--name={name}",
                f"--data-dir={state_dir / 'etcd' / name}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={initial}",
                "--initial-cluster-token=lora-cluster",
                "--initial-cluster-state=new",
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=1h",
                "--logger=zap",
                "--log-level=warn",
            ],
            env,
            REPO,
            health_url=f"{client}/health",
        )
        for name, client, peer in zip(names, clients, peers, strict=True)
    ]
    etcd_settings = {
        "ETCD_ENDPOINTS": ",".join(clients),
        "ETCD_PREFIX": PREFIX,
    }

    # ------------------------------------------------------------------------------------ nodes
    node_env = {**env, **etcd_settings, "ETCD_USER": "lora-node", "ETCD_PASSWORD": keys["node"]}
    node_env["CONTROL_TOKEN"] = keys["control_token"]
    node_children: list[tuple[Child, Child]] = []
    addresses = []
    for i in range(nodes):
        http, grpc, metrics = triton_port + 10 * i, triton_port + 10 * i + 1, triton_port + 10 * i + 2
        run_dir = state_dir / f"node{i}"
        own = {
            **node_env,
            "TRITON_HTTP_PORT": str(http),
            "TRITON_GRPC_PORT": str(grpc),
            "TRITON_METRICS_PORT": str(metrics),
            "STATE_DIR": str(run_dir / "state"),
            "NODE_ID": f"node{i}",
            "NODE_TRITON_URL": f"127.0.0.1:{http}",
            "NODE_METRICS_URL": f"http://127.0.0.1:{metrics}/metrics",
        }
        triton = triton_child(f"node{i}", run_dir / "triton", own, http)
        agent = Child(f"node{i}-agent", [sys.executable, "-m", "lora_cluster.node_agent"], own, REPO)
        node_children.append((triton, agent))
        addresses.append((f"node{i}", f"127.0.0.1:{http}"))

    # ------------------------------------------------------------------------ balancer and shim
    config = state_dir / "haproxy.cfg"
    data, control = f"127.0.0.1:{balancer_port}", f"127.0.0.1:{balancer_port + 1}"
    config.write_text(render(data, control, addresses))
    haproxy = Child("haproxy", ["haproxy", "-db", "-f", str(config)], env, REPO, f"http://{data}/haproxy/health")
    shim_env = {
        **env,
        **etcd_settings,
        "ETCD_USER": "lora-shim",
        "ETCD_PASSWORD": keys["shim"],
        "TRITON_URL": data,
        "TRITON_CONTROL_URL": control,
        "CONTROL_TOKEN": keys["control_token"],
    }
    shim = shim_child(shim_env)
    base = f"http://localhost:{api_port}/api/v1"

    def on_ready() -> None:
        # HAProxy checks each backend on its own: the shim is ready once the data frontend reaches a node, and
        # the control frontend follows within a check interval or two. Ready means loads go through too.
        if not answers_ok(f"http://{control}/v2/models/lora_classifier/ready", CONTROL_READY_S):
            log(f"the control frontend reaches no node after {CONTROL_READY_S:.0f} s; loads answer 503 until it does")
        for task in demo:
            post(f"{base}/inference/models/load", {"model_dir": task, "max_length": 64}, env.get("API_KEY"))
        print(f"\ncluster: ready at {base} ({nodes} nodes)", flush=True)
        for i, (name, address) in enumerate(addresses):
            print(f"  {name}: Triton http://{address} (metrics :{triton_port + 10 * i + 2})", flush=True)
        print(f"  HAProxy: data http://{data}, control http://{control}", flush=True)
        print(f"  etcd: {', '.join(clients)} (users and passwords in {state_dir / SECRETS_FILE})", flush=True)
        print(f"  curl -s {base}/inference/status\n", flush=True)

    run_dir = state_dir / "run"
    run_dir.mkdir(exist_ok=True)
    etcd_supervisors = [Supervisor(child, None, settings, run_dir / f"{child.name}.json") for child in etcd]
    node_supervisors = [
        Supervisor(triton, agent, settings, run_dir / f"{triton.name}.json") for triton, agent in node_children
    ]
    front = Supervisor(haproxy, shim, settings, run_dir / "front.json", on_ready, shim_ready_url=f"{base}/health/ready")
    stopping = StopFlag()  # set from the signal handlers: no lock, no output there
    outcome: list[int] = []

    def run(supervisor: Supervisor) -> None:
        code = supervisor.run()
        if code and not stopping.is_set():
            outcome.append(code)
            stopping.set()

    def stop(signum: int, _frame=None) -> None:
        stopping.set(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    layers = [etcd_supervisors, node_supervisors, [front]]
    threads: list[list[threading.Thread]] = []
    for layer, supervisors in enumerate(layers):
        threads.append([threading.Thread(target=run, args=(s,), daemon=True) for s in supervisors])
        for thread in threads[-1]:
            thread.start()
        if layer == 0 and fresh:  # a new etcd: authentication on before any node or shim logs in
            if not wait_for_etcd(etcd, stopping) or not set_up_auth(clients[0], keys):
                stopping.set()
                break
    stopping.wait()
    if stopping.signum is not None:
        log(f"stopping (signal {stopping.signum})")
    for layer, (supervisors, layer_threads) in reversed(list(enumerate(zip(layers, threads)))):  # etcd last
        # etcd's members one after the other: a leader stopped while its followers are still connected hands its
        # leadership over to one of them, and waits ~7 s for an answer if they are stopping too; one by one, each
        # hand-over reaches a live member, and the last member has no peer left to wait for.
        one_by_one = layer == 0
        for supervisor, thread in zip(supervisors, layer_threads, strict=False):
            supervisor.request_stop(signal.SIGTERM)
            if one_by_one:
                thread.join()
        for thread in layer_threads:
            thread.join()
    return outcome[0] if outcome else 0


def answers_ok(url: str, timeout_s: float) -> bool:
    """Whether `url` answers 200 within `timeout_s`, asking every 0.2 s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def wait_for_etcd(members: list[Child], stopping: StopFlag) -> bool:
    while not stopping.wait(0.5):
        if all(member.ready_at is not None for member in members):
            return True
    return False


def set_up_auth(endpoint: str, keys: dict[str, str]) -> bool:
    try:
        enable_auth(endpoint, keys["root"], {"lora-node": keys["node"]}, {"lora-shim": keys["shim"]}, PREFIX)
    except (RuntimeError, OSError) as exc:
        log(f"cannot set up etcd's authentication: {exc}")
        return False
    log("etcd: authentication on (users lora-node, read-write, and lora-shim, read-only)")
    return True


if __name__ == "__main__":
    raise SystemExit(main())
