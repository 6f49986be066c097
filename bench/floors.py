"""The floor of each layer of the serving path: what one request costs where the layer does nothing else.

Used by bench/overhead.py, with the same clients and the same /proc accounting:

- **bare gthread**: gunicorn's own gthread worker (2 workers x 64 threads, as the shim) with a WSGI function
  that reads the body and answers a fixed predict answer;
- **bare Flask**: the same with a Flask route that parses the JSON and answers with jsonify;
- **no-op model, Triton direct**: tritonserver with a Python-backend model of lora_classifier's config whose
  `execute` answers fixed rows: Triton's HTTP front, its scheduler and the backend's IPC per request, nothing
  of ours but a loop;
- **no-op model, through the shim**: the real shim in front of it: the whole path but the engine;
- **tokenizer**: one text through the encoder's tokenizer, in this process.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from bench.stack import Stack
from testkit.process_harness import ManagedProcess, free_port
from testkit.triton_harness import REPO, TritonServer, server_settings

NOOP_MODEL = """
import os
import sys

# as lora_classifier's model.py: the stub ignores PYTHONPATH, so the environment's packages come from here
sys.path[:0] = [p for p in os.environ.get("LORA_CLASSIFIER_PYTHONPATH", "").split(os.pathsep) if p]

import json
import numpy as np
import triton_python_backend_utils as pb_utils

ROW = json.dumps({"labels": ["x"], "probabilities": [1.0], "execute_us": 0}).encode()


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT")
            rows = 1 if text is None else text.as_numpy().shape[0]
            tensors = [
                pb_utils.Tensor("RESULT", np.full((rows, 1), ROW, dtype=object)),
                pb_utils.Tensor("PROBABILITIES", np.ones((rows, 1), dtype=np.float32)),
                pb_utils.Tensor("NUM_LABELS", np.ones((rows, 1), dtype=np.int32)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""


class BareServer:
    """gunicorn's gthread worker with `app` (bench.floor_apps:bare_wsgi or bench.floor_apps:bare_flask)."""

    def __init__(self, work: Path, app: str) -> None:
        self.port = free_port()
        self.app = app
        self.server = ManagedProcess(work / f"{app.rsplit(':', 1)[1]}.log")

    @property
    def predict_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/inference/predict"

    def __enter__(self) -> BareServer:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        command = [
            gunicorn,
            "-k",
            "gthread",
            "-w",
            "2",
            "--threads",
            "64",
            "-b",
            f"127.0.0.1:{self.port}",
            "--access-logfile",
            "-",
            self.app,
        ]
        self.server.start(command, dict(os.environ), f"http://127.0.0.1:{self.port}/", 60, REPO)
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def roots(self) -> list[int]:
        assert self.server.process is not None
        return [self.server.process.pid]


class NoopTriton(TritonServer):
    """tritonserver with the no-op model in lora_classifier's place (its config.pbtxt, NOOP_MODEL as model.py)."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        super().__init__(work, env, instances="auto")
        self.repository = work / "noop-repository"
        shutil.rmtree(self.repository, ignore_errors=True)
        (self.repository / "lora_classifier" / "1").mkdir(parents=True)
        config = REPO / "model_repository" / "lora_classifier" / "config.pbtxt"
        shutil.copy(config, self.repository / "lora_classifier" / "config.pbtxt")
        (self.repository / "lora_classifier" / "1" / "model.py").write_text(NOOP_MODEL)

    def command(self) -> list[str]:
        return [*super().command(), f"--model-repository={self.repository}"]


def noop_stack(work: Path, base: Path, root: Path) -> Stack:
    """The no-op model behind the real shim (`make serve`'s shim defaults)."""
    work.mkdir(parents=True, exist_ok=True)
    return Stack(work, base, root, triton=NoopTriton(work, server_settings(base, root, work / "state")))


def stack_roots(stack: Stack) -> list[int]:
    """The processes of a stack: tritonserver's and gunicorn's, with their children."""
    assert stack.shim is not None and stack.shim.server.process is not None
    return [*triton_roots(stack), stack.shim.server.process.pid]


def triton_roots(stack: Stack) -> list[int]:
    assert stack.triton.server.process is not None
    return [stack.triton.server.process.pid]


def tokenizer_cpu_ms(base: Path, texts: list[str], max_length: int, calls: int = 2000) -> float:
    """ms of this process's CPU for one text through `base`'s tokenizer (as the engine calls it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    tokenizer([texts[0]], truncation=True, max_length=max_length)
    started = time.process_time()
    for i in range(calls):
        tokenizer([texts[i % len(texts)]], truncation=True, max_length=max_length)
    return (time.process_time() - started) / calls * 1000
