"""`make serve` and `make cluster` run as a user runs them: in a process group of their own (as a terminal
runs them), their output in a file, ready once they print their URL, stopped with Ctrl-C's signal."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from .process_harness import free_port
from .triton_harness import REPO

# What Serve.predict sends unless told otherwise.
TEXTS = ["baba dede kiki", "类别 好坏", "lolo mumu nana fafa"]


def free_block(size: int) -> int:
    """The first of `size` consecutive ports free on loopback, below the ephemeral range (where free_port's
    ports come from), so that make cluster's fixed offsets cannot meet them."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 32000 - size)
        sockets = []
        try:
            for port in range(first, first + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError("no block of free ports")


class MakeTarget:
    """`make <target>` with `settings` added to this environment."""

    def __init__(self, target: str, workdir: Path, settings: Mapping[str, str]) -> None:
        self.target = target
        self.workdir = workdir
        self.env = {**os.environ, **settings}
        self.log_path = workdir / f"{target}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> MakeTarget:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> MakeTarget:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", self.target],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process is not None and self.process.poll() is None, (
                f"make {self.target} exited ({self.process and self.process.returncode}):\n{self.output()[-4000:]}"
            )
            assert time.monotonic() < deadline, f"{what} not within {timeout} s:\n{self.output()[-4000:]}"
            time.sleep(0.2)

    def wait_ready(self, timeout: float = 300) -> None:
        """A user waits for the URL line; so does this."""
        self.wait_for(lambda: "ready at" in self.output(), timeout, f"make {self.target}'s ready line")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, timeout: float = 120) -> None:
        """Ctrl-C, then (if it hangs) SIGKILL to everything it started: every supervised child has a process
        group of its own, so the group's signal alone would not reach them."""
        if self.process is None or self.process.poll() is not None:
            return
        descendants = self.descendants()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in descendants:
                try:
                    child.kill()
                except psutil.Error:
                    pass
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Serve(MakeTarget):
    """`make serve` on ports and in directories of its own."""

    def __init__(self, workdir: Path, **settings: str) -> None:
        self.api_port = free_port()
        defaults = {
            "STATE_DIR": str(workdir / "state"),
            "RUN_DIR": str(workdir / "run"),
            "API_PORT": str(self.api_port),
            "TRITON_HTTP_PORT": str(free_port()),
            "TRITON_GRPC_PORT": str(free_port()),
            "TRITON_METRICS_PORT": str(free_port()),
            "GUNICORN_WORKERS": "1",
            "GUNICORN_ACCESS_LOG": os.devnull,
            "TRITON_INSTANCES": "2",
        }
        super().__init__("serve", workdir, {**defaults, **settings})
        self.base = f"http://127.0.0.1:{self.api_port}/api/v1"

    def wait_ready(self, timeout: float = 240) -> None:
        super().wait_ready(timeout)

    @contextmanager
    def serving(self, model_ids: Sequence[str]) -> Iterator[Serve]:
        """Started, ready, with `model_ids` loaded; stopped when the block ends."""
        self.start()
        try:
            self.wait_ready()
            for model_id in model_ids:
                loaded = self.post("/inference/models/load", {"model_dir": model_id})
                assert loaded.status_code == 200, loaded.text
            yield self
        finally:
            self.stop()

    def one(self, predicate: Callable[[psutil.Process], bool]) -> psutil.Process:
        found = [p for p in self.descendants() if safely(predicate, p)]
        assert len(found) == 1, found
        return found[0]

    def tritonserver(self) -> psutil.Process:
        return self.one(lambda p: p.name() == "tritonserver")

    def gunicorn_master(self) -> psutil.Process:
        # the gunicorn process whose parent is not gunicorn (its workers' is)
        return self.one(
            lambda p: "gunicorn" in " ".join(p.cmdline()) and "gunicorn" not in " ".join(p.parent().cmdline())
        )

    # the API ------------------------------------------------------------------------------------

    def post(self, path: str, body: dict, timeout: float = 60) -> requests.Response:
        return requests.post(f"{self.base}{path}", json=body, timeout=timeout)

    def status(self) -> dict:
        return requests.get(f"{self.base}/inference/status", timeout=10).json()

    def predict(self, model_id: str, texts: Sequence[str] = TEXTS) -> requests.Response:
        return self.post("/inference/predict", {"model_id": model_id, "texts": list(texts)})


class Cluster(Serve):
    """`make cluster` with `nodes` nodes on a block of ports of its own. Its STATE_DIR (etcd's data, the secrets,
    the desired state) may be given to successive runs, as one cluster started again and again."""

    def __init__(self, workdir: Path, state_dir: Path, first_port: int, nodes: int = 1, **settings: str) -> None:
        """`first_port`: the first of `Cluster.ports(nodes)` free ones (a cluster started again keeps its ports:
        etcd's data holds its members' addresses)."""
        first = first_port
        self.api_port = first
        defaults = {
            "NODES": str(nodes),
            "STATE_DIR": str(state_dir),
            "API_PORT": str(first),
            "CLUSTER_ETCD_PORT": str(first + 1),
            "CLUSTER_TRITON_PORT": str(first + 7),  # after the shim's and etcd's 6
            "CLUSTER_BALANCER_PORT": str(first + 7 + 10 * nodes),
            "GUNICORN_WORKERS": "1",
            "GUNICORN_ACCESS_LOG": os.devnull,
            "TRITON_INSTANCES": "1",
        }
        MakeTarget.__init__(self, "cluster", workdir, {**defaults, **settings})
        self.base = f"http://127.0.0.1:{first}/api/v1"
        self.triton_port = first + 7  # node i's http, grpc and metrics ports at +10i

    @staticmethod
    def ports(nodes: int = 1) -> int:
        """The first of a block of free ports for a cluster of `nodes`: one block, carved up, since blocks picked one
        by one could overlap (tests/serve/test_make_cluster.py)."""
        return free_block(1 + 6 + 10 * nodes + 2)


def safely(predicate: Callable[[psutil.Process], bool], process: psutil.Process) -> bool:
    try:
        return predicate(process)
    except psutil.Error:
        return False
