"""The GPU check: lora_classifier served by tritonserver from a KIND_GPU instance in fp16, on a BERT-base-sized
encoder with 8 real PEFT adapters, measured against plain transformers + peft in fp32 and the engine in-process.

    python3 -m bench.gpu.check --bundle .gpu --out "$OUT"       # on the GPU machine (see docs/gpu.md)
    .venv/bin/python -m bench.gpu.check --device cpu --quick    # here: the same steps on CPU, tiny encoder

The GPU machine has Python 3.12 with torch, transformers, peft, tokenizers and requests, and no registry;
`bash bench/gpu/bundle.sh` builds what it carries: the wheel's tritonserver, a numpy 1.26 wheel, site/ (the
pure-Python packages the machine lacks: bench/gpu/bundle_packages.py) and the commit it was built at (the
device's copy has no .git; the figures record it). Steps:
  1. environment and the two risks: where libpython3.12.so.1.0 is (the stub links it) and numpy's version
  2. the encoder (random weights, BERT-base's shape) and 8 adapters (r=8 on query/value, 4 labels)
  3. in-process throughput (AdapterEngine, fp16): bare forward, one adapter, 8 mixed; short and mixed lengths
  4. tritonserver (scripts/run_triton.py --kind gpu); its stub first with the machine's numpy, and with the
     carried numpy 1.26 only if that fails
  5. parity of the served probabilities against transformers + peft in fp32 (testkit.factories.Reference)
  6. served throughput over Triton's HTTP/JSON protocol (bench/loadgen.py), and a lone request's latency
  7. the shim's status computation (api_shim.status) over Triton's metrics: the GPU's memory
Figures go to OUT/gpu.json, the log to OUT/gpu.log; bench/report.py renders gpu.json into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def bundle_of(argv: Sequence[str]) -> Path:
    """The --bundle of a command line, read before argparse: the imports below need its site/ (etcd3gw and
    prometheus-client, say)."""
    bundle = REPO / ".gpu"
    for i, arg in enumerate(argv):
        if arg == "--bundle" and i + 1 < len(argv):
            bundle = Path(argv[i + 1])
        elif arg.startswith("--bundle="):
            bundle = Path(arg.partition("=")[2])
    return bundle


def use_bundle_site(bundle: Path) -> Path | None:
    """Put the bundle's site/ first on this interpreter's import path, on its children's (PYTHONPATH: the
    preflight, scripts/run_triton.py) and on the model's in the backend stub (LORA_CLASSIFIER_PYTHONPATH, whose
    entries scripts/run_triton.py puts first). None when the bundle has none."""
    site = bundle / "site"
    if not site.is_dir():
        return None
    site = site.resolve()
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    for name in ("PYTHONPATH", "LORA_CLASSIFIER_PYTHONPATH"):
        paths = [p for p in os.environ.get(name, "").split(os.pathsep) if p]
        if str(site) not in paths:
            os.environ[name] = os.pathsep.join([str(site), *paths])
    return site


if __name__ == "__main__":
    use_bundle_site(bundle_of(sys.argv[1:]))

import numpy as np
import requests
import torch

from adapter_manager import AdapterEngine
from api_shim.status import service_status  # Flask- and tritonclient-free
from bench.loadgen import SHIM, TRITON, run_load
from bench.multiclient import START_DELAY_S, MultiResult, run_processes
from bench.process_cpu import CLASSES, cpu_by_process, cpu_delta
from bench.perf_analyzer.client import perf_analyzer as run_perf_analyzer, perf_analyzer_env
from testkit.factories import OutputSpec, Reference, make_tiny_base, make_training_output
from bench.gpu.render import gpu_section
from bench.revision import head_commit
from testkit.measure import percentile, throughput
from testkit.process_harness import ManagedProcess, free_port
from testkit.texts import mixed_texts, short_texts

MODEL = "lora_classifier"
MAX_LENGTH = 256
ADAPTERS = [f"team-{i}/job-{i}" for i in range(8)]
BERT_BASE = {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072}
TINY = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128}
BATCH = 64  # model_repository's max_batch_size


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# ---------------------------------------------------------------------------------------------- texts


def token_count(text: str) -> int:
    return min(len(text.split()) + 2, MAX_LENGTH)


# ------------------------------------------------------------------------------------------- 1. environment


def environment() -> dict[str, Any]:
    import peft
    import transformers

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    found = sorted(
        {
            str(p)
            for d in {libdir, "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/local/lib", f"{sys.base_prefix}/lib"}
            if d and Path(d).is_dir()
            for p in Path(d).glob("libpython3*.so*")
        }
    )
    ldconfig = subprocess.run(["sh", "-c", "ldconfig -p | grep libpython3"], capture_output=True, text=True).stdout
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "base_prefix": sys.base_prefix,
        "libpython": {
            "LIBDIR": libdir,
            "INSTSONAME": soname,
            "in_libdir": (Path(libdir) / soname).is_file(),
            "found": found,
            "ldconfig": ldconfig.strip().splitlines(),
        },
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
        }
        smi = shutil.which("nvidia-smi")
        if smi:
            info["gpu"]["nvidia_smi"] = subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
            ).stdout.strip()
    return info


@dataclass
class Unpacked:
    """What bench/gpu/bundle.sh carried, made ready under the work folder; None where the bundle lacks it."""

    triton_site: Path | None = None  # the wheel's tritonserver, for PYTHONPATH
    numpy_dir: Path | None = None  # numpy 1.x, for the stub's and the shim's sites
    shim_paths: list[Path] = field(default_factory=list)  # the shim's packages beyond the machine's
    perf_analyzer: Path | None = None
    perf_analyzer_libs: Path | None = None  # libb64 and libcudart 12 under the names perf_analyzer asks for


def _extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tar:
        # Our own archive; the "tar" filter where this Python has it (3.11.4+) keeps it inside `into`.
        tar.extractall(into, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))


def unpack_bundle(bundle: Path, work: Path) -> Unpacked:
    """The bundle's parts, unpacked under `work` (once)."""
    found = Unpacked()
    archive = bundle / "tritonserver.tar.xz"
    if archive.exists():
        site = work / "triton-site"
        if not (site / "pytriton").exists():
            _extract(archive, site)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        if (site / "pytriton" / "tritonserver" / "python_backend_stubs" / version).is_dir():
            found.triton_site = site
        else:
            log(f"{archive} has no backend stub for Python {version}: using the installed nvidia-pytriton")
    numpy_archive = bundle / "numpy-1.26.4.tar.xz"
    wheels = sorted(bundle.glob("numpy-1.*.whl"))  # what bundles before December 2026 carried
    if numpy_archive.exists() or wheels:
        found.numpy_dir = work / "stub-numpy"
        if not (found.numpy_dir / "numpy").exists():
            if numpy_archive.exists():
                _extract(numpy_archive, found.numpy_dir)
            else:
                with zipfile.ZipFile(wheels[0]) as wheel:
                    wheel.extractall(found.numpy_dir)
    shim_wheels = sorted((bundle / "wheels").glob("*.whl"))
    if shim_wheels:
        compiled = work / "shim-compiled"
        if not compiled.exists():
            for wheel_path in shim_wheels:
                with zipfile.ZipFile(wheel_path) as wheel:
                    wheel.extractall(compiled)
        found.shim_paths.append(compiled)
    if (bundle / "shim").is_dir():
        found.shim_paths.append((bundle / "shim").resolve())
    packed = bundle / "perf_analyzer.xz"
    if packed.exists():
        binary = work / "bin" / "perf_analyzer"
        if not binary.exists():
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_bytes(lzma.decompress(packed.read_bytes()))
            binary.chmod(0o755)
        found.perf_analyzer = binary
        libs = found.triton_site / "nvidia_pytriton.libs" if found.triton_site else None
        if libs is not None and libs.is_dir():
            found.perf_analyzer_libs = work / "perf_analyzer-libs"
            found.perf_analyzer_libs.mkdir(exist_ok=True)
            for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
                for library in sorted(libs.glob(pattern))[:1]:
                    link = found.perf_analyzer_libs / name
                    link.unlink(missing_ok=True)
                    link.symlink_to(library)
    return found


# ---------------------------------------------------------------------------------- 2. encoder and adapters


def prepare_models(work: Path, shape: dict[str, int]) -> tuple[Path, Path]:
    base, root = work / "base", work / "outputs"
    if not (base / "config.json").exists():
        make_tiny_base(base, **shape)
    for i, model_id in enumerate(ADAPTERS):
        if not (root / model_id).exists():
            make_training_output(root, model_id, base, OutputSpec(rank=8, alpha=16, num_labels=4, seed=i))
    return base, root


# --------------------------------------------------------------------------------------- 3. in-process


def batches(texts: Sequence[str], size: int, by_length: bool) -> list[list[str]]:
    ordered = sorted(texts, key=token_count) if by_length else list(texts)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def encoder_flops_per_token(model: torch.nn.Module, tokens_per_text: float) -> float:
    """A forward's FLOPs per token through the encoder's layers: 2 per weight of their matrices, and attention's
    scores and weighted sum, 4 x hidden per layer per token of the sequence (embeddings and pooler left out)."""
    config = model.config
    weights = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n and "pooler" not in n)
    return 2 * weights + 4 * config.num_hidden_layers * config.hidden_size * tokens_per_text


def in_process(
    base: Path, root: Path, device: str, dtype: str, sets: dict[str, list[str]], rounds: int, seconds: float
) -> dict[str, Any]:
    engine = AdapterEngine(base, root, device=device, dtype=dtype)
    for model_id in ADAPTERS:
        engine.load(model_id, max_length=MAX_LENGTH)
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)

    def bare(group: list[list[str]]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for texts in group:
                    engine.model(**engine._tokenize(texts, [MAX_LENGTH] * len(texts)))

        return run

    def classify(group: list[list[str]], mixed: bool) -> Callable[[], None]:
        def run() -> None:
            for texts in group:
                ids = [ADAPTERS[i % 8] if mixed else ADAPTERS[0] for i in range(len(texts))]
                engine.classify(texts, ids)

        return run

    figures: dict[str, Any] = {}
    for name, texts in sets.items():
        tokens = sum(token_count(t) for t in texts)
        arrival = batches(texts, BATCH, by_length=False)
        modes = {
            "bare-sorted": bare(batches(texts, BATCH, by_length=True)),
            "bare-arrival": bare(arrival),
            "one": classify(arrival, False),
            "mixed-8": classify(arrival, True),
        }
        per_mode: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, fn in modes.items():
                per_mode[mode].append(throughput(fn, len(texts), seconds, sync))
        figures[name] = {
            mode: {"texts_per_s": values, "tokens_per_s": [v * tokens / len(texts) for v in values]}
            for mode, values in per_mode.items()
        }
        figures[name]["tokens_per_text"] = tokens / len(texts)
    figures["encoder_flops_per_token"] = {
        name: encoder_flops_per_token(engine.model, figures[name]["tokens_per_text"]) for name in sets
    }
    lone = sets["short"][0]
    samples = []
    for _ in range(max(20, rounds * 20)):
        started = time.perf_counter()
        engine.classify([lone], [ADAPTERS[0]])
        samples.append((time.perf_counter() - started) * 1000)
    figures["forward_tokens"] = engine.forward_tokens
    figures["batch1_ms"] = {"p50": statistics.median(samples), "p99": percentile(samples, 99)}
    return figures


# ------------------------------------------------------------------------------------------ 4. tritonserver


class TritonHttp:
    """lora_classifier over Triton's HTTP/JSON protocol, with requests: what the shim's TritonGateway does, for a
    machine without tritonclient. `control`, `model_state` and `model_config` are the calls api_shim.status makes."""

    def __init__(self, url: str, metrics_url: str, token: str) -> None:
        self.url, self.metrics_url, self.token, self.model = url, metrics_url, token, MODEL

    def control(self, document: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps({**document, "token": self.token})
        body = {
            "inputs": [{"name": "CONTROL", "shape": [1, 1], "datatype": "BYTES", "data": [payload]}],
            "outputs": [{"name": "CONTROL_RESULT"}],
        }
        answer = requests.post(f"{self.url}/v2/models/{MODEL}/infer", json=body, timeout=120)
        if answer.status_code != 200:
            raise RuntimeError(f"control {document.get('op')} answered {answer.status_code}: {answer.text[:500]}")
        return json.loads(answer.json()["outputs"][0]["data"][0])

    def model_state(self) -> str:
        index = requests.post(f"{self.url}/v2/repository/index", headers=self._restricted, timeout=5).json()
        return next((e.get("state", "UNKNOWN") for e in index if e.get("name") == MODEL), "UNKNOWN")

    def model_config(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/v2/models/{MODEL}/config", headers=self._restricted, timeout=5).json()

    @property
    def _restricted(self) -> dict[str, str]:
        return {"lora-control-token": self.token}

    def predict(self, texts: list[str], model_ids: list[str]) -> np.ndarray:
        """PROBABILITIES, one row per text (padded to the widest model of the request)."""
        shape = [len(texts), 1]
        body = {
            "inputs": [
                {"name": "TEXT", "shape": shape, "datatype": "BYTES", "data": texts},
                {"name": "MODEL_ID", "shape": shape, "datatype": "BYTES", "data": model_ids},
            ],
            "outputs": [{"name": "PROBABILITIES"}, {"name": "NUM_LABELS"}],
        }
        answer = requests.post(f"{self.url}/v2/models/{MODEL}/infer", json=body, timeout=120)
        if answer.status_code != 200:
            raise RuntimeError(f"predict answered {answer.status_code}: {answer.text[:300]}")
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        probabilities = np.array(outputs["PROBABILITIES"]["data"], dtype=np.float64)
        return probabilities.reshape(outputs["PROBABILITIES"]["shape"])


class Triton(TritonHttp):
    """tritonserver through scripts/run_triton.py, and its HTTP client."""

    def __init__(
        self,
        work: Path,
        base: Path,
        root: Path,
        kind: str,
        dtype: str,
        site: Path | None,
        stub_site: Path | None,
        instances: int = 1,
    ) -> None:
        self.http, self.grpc, self.metrics_port = free_port(), free_port(), free_port()
        super().__init__(
            f"http://127.0.0.1:{self.http}", f"http://127.0.0.1:{self.metrics_port}/metrics", secrets.token_hex(16)
        )
        state = work / f"state-{self.http}"
        state.mkdir(parents=True)
        self.env = {
            **os.environ,
            "BASE_MODEL_DIR": str(base),
            "MODELS_ROOT": str(root),
            "STATE_DIR": str(state),
            "DTYPE": dtype,
            "CONTROL_TOKEN": self.token,
        }
        if site:  # run_triton.py finds the wheel's tritonserver on the import path
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
        self.command = [
            sys.executable,
            str(REPO / "scripts" / "run_triton.py"),
            "--kind",
            kind,
            "--instances",
            str(instances),
            f"--http-port={self.http}",
            f"--grpc-port={self.grpc}",
            f"--metrics-port={self.metrics_port}",
            "--run-dir",
            str(work / f"run-{self.http}"),
            "--runtime-dir",
            str(work / "triton-runtime"),
        ]
        if stub_site:
            self.command += ["--stub-site", str(stub_site)]
        self.process = ManagedProcess(work / f"tritonserver-{self.http}.log")

    def start(self, timeout: float = 150) -> None:
        self.process.start(self.command, self.env, f"{self.url}/v2/health/ready", timeout, cwd=REPO)

    def stop(self) -> None:
        self.process.stop()

    @property
    def pid(self) -> int:
        """scripts/run_triton.py's, whose children are tritonserver and its stubs."""
        assert self.process.process is not None, "start() first"
        return self.process.process.pid


# Packages built on numpy's C API that numpy 1.x cannot import once built for 2.x (scipy uses np.long, new in
# 2.0), and that the model never needs. transformers imports sklearn, hence scipy, whenever it finds them.
NUMPY_2_EXTENSIONS = (
    "numpy",
    "scipy",
    "sklearn",
    "scikit_learn",
    "pandas",
    "torchvision",
    "torchaudio",
    "numba",
    "h5py",
    "matplotlib",
    "skimage",
    "scikit_image",
    "pyarrow",
    "cv2",
    "opencv",
    "cupy",
    "jax",
    "jaxlib",
    "ml_dtypes",
    "onnxruntime",
    "tensorstore",
    "statsmodels",
    "xarray",
    "seaborn",
)


def stub_site_with_numpy(work: Path, numpy_dir: Path | None, own: Path | None = None, name: str = "stub-site") -> Path:
    """A site-packages for the backend stub (or the shim: `name`): `own` (this interpreter's), linked entry by
    entry, less numpy and the packages built against numpy 2, plus the carried numpy 1.x (or, rehearsing without
    one, this numpy)."""
    site = work / name
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    own = own or Path(sysconfig.get_paths()["purelib"])

    def excluded(name: str) -> bool:
        stem = name.split("-")[0].split(".")[0].lower()
        return stem in NUMPY_2_EXTENSIONS or stem.startswith(("numpy", "scipy", "scikit", "opencv"))

    for entry in own.iterdir():
        if not excluded(entry.name):
            (site / entry.name).symlink_to(entry)
    numpy_source = numpy_dir or Path(np.__file__).parent.parent
    for entry in numpy_source.iterdir():
        if entry.name.split("-")[0].split(".")[0] == "numpy":
            (site / entry.name).symlink_to(entry)
    return site


def preflight(stub_site: Path | None) -> dict[str, Any]:
    """Import what model.py imports, on the stub's path (LORA_CLASSIFIER_PYTHONPATH first), in a fresh interpreter."""
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]; import numpy, torch, transformers, peft; "
        "from transformers import AutoModel, AutoTokenizer; from peft import PeftModel; "
        "from adapter_manager import engine, service, manifest, settings, memory, etcd_state, counters, "
        "outputs_index; "
        "from lora_core import commands, control_token, errors; "
        "print('numpy', numpy.__version__, numpy.__file__, 'torch', torch.__version__, torch.cuda.is_available())"
    )
    # in the stub's order: LORA_CLASSIFIER_PYTHONPATH's entries (the bundle's site) first (scripts/run_triton.py)
    own = [p for p in os.environ.get("LORA_CLASSIFIER_PYTHONPATH", "").split(os.pathsep) if p]
    paths = [*own, str(REPO), str(stub_site or Path(sysconfig.get_paths()["purelib"]))]
    # -S: no site-packages but the ones named, as in the stub (model.py drops the system's site directories)
    done = subprocess.run([sys.executable, "-S", "-c", code, *paths], capture_output=True, text=True, timeout=120)
    answer = {"rc": done.returncode, "output": (done.stdout + done.stderr)[-3000:]}
    if stub_site is not None:  # what the system Python's own site directories would have brought in
        system = subprocess.run(
            [getattr(sys, "_base_executable", sys.executable), "-c", code, *paths],
            capture_output=True,
            text=True,
            timeout=120,
        )
        answer["with_system_sites"] = {"rc": system.returncode, "output": (system.stdout + system.stderr)[-2500:]}
    return answer


def log_errors(path: Path, lines: int = 40) -> list[str]:
    """The lines of a tritonserver log that say what went wrong."""
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    keys = ("E1", "rror", "Traceback", "numpy", 'File "', "failed")
    return [line[:400] for line in text if any(k in line for k in keys)][-lines:]


def stub_numpy_plan(
    numpy_version: str, numpy_dir: Path | None, machine_numpy_first: bool, numpy_1_site: bool
) -> list[str]:
    """Which stub environments to try, in order. Triton 2.51's stub (pybind11 2.10) crashes on numpy 2 at the first
    BYTES tensor (seen on the H100: `unpack_from requires a buffer of at least ...`), so with numpy 2 it gets a
    site with numpy 1.x, unless asked to show the crash first."""
    if int(numpy_version.split(".")[0]) < 2 and not numpy_1_site:
        return ["machine"]
    plan = ["machine"] if machine_numpy_first else []
    if numpy_dir or numpy_1_site:
        plan.append("numpy-1-site")
    return plan or ["machine"]


def start_triton(
    work: Path,
    base: Path,
    root: Path,
    kind: str,
    dtype: str,
    site: Path | None,
    numpy_dir: Path | None,
    plan: list[str],
    probe: list[str],
    out: Path,
    instances: int = 1,
) -> tuple[Triton | None, dict[str, Any]]:
    """Start Triton, load the adapters and check one predict, for each stub environment of `plan` until one
    serves. None when none did."""
    attempts: list[dict[str, Any]] = []
    for choice in plan:
        stub_site = stub_site_with_numpy(work, numpy_dir) if choice == "numpy-1-site" else None
        triton = Triton(work, base, root, kind, dtype, site, stub_site, instances)
        attempt: dict[str, Any] = {"stub": choice}
        attempts.append(attempt)
        attempt["preflight"] = preflight(stub_site)
        log("preflight", attempt["preflight"])
        if attempt["preflight"]["rc"] != 0:  # the model could not even be imported there
            attempt["ok"] = False
            continue
        started = time.perf_counter()
        try:
            triton.start()
            attempt["ready_s"] = round(time.perf_counter() - started, 1)
            for model_id in ADAPTERS:
                triton.control({"op": "load", "model_dir": model_id, "max_length": MAX_LENGTH})
            rows = triton.predict(probe, [ADAPTERS[i % 8] for i in range(len(probe))])
            if not np.all(np.isfinite(rows)) or not np.allclose(rows.sum(axis=1), 1, atol=1e-3):
                raise RuntimeError(f"predict returned rows that are not distributions: {rows[:2]}")
            attempt["ok"] = True
            return triton, {"attempts": attempts}
        except Exception as exc:
            attempt["ok"] = False
            attempt["error"] = str(exc)[-1500:]
            triton.stop()
            attempt["log_errors"] = log_errors(triton.process.log_path)
            shutil.copy(triton.process.log_path, out / f"tritonserver-attempt{len(attempts)}.log")
            log("tritonserver attempt failed:", json.dumps(attempt, indent=1))
    return None, {"attempts": attempts}


# -------------------------------------------------------------------------------------------- 5. parity


def parity(triton: Triton, base: Path, root: Path, texts: list[str]) -> dict[str, Any]:
    """Served probabilities (one request mixing all adapters, and one request per adapter) against
    transformers + peft in fp32, one text at a time on the CPU."""
    reference = Reference(base)
    per_adapter = len(texts) // len(ADAPTERS)
    expected, rows, mixed_ids, mixed_texts_ = [], [], [], []
    for i, model_id in enumerate(ADAPTERS):
        mine = texts[i * per_adapter : (i + 1) * per_adapter]
        expected.extend(reference.probabilities(root / model_id, mine, max_length=MAX_LENGTH))
        rows.extend(triton.predict(mine, [model_id] * len(mine)))
        mixed_texts_.extend(mine)
        mixed_ids.extend([model_id] * len(mine))
    order = list(range(len(mixed_texts_)))
    random.Random(0).shuffle(order)
    shuffled = triton.predict([mixed_texts_[i] for i in order], [mixed_ids[i] for i in order])
    mixed = np.empty_like(shuffled)
    mixed[order] = shuffled
    reference_rows = np.array(expected)
    per_request = np.abs(np.array(rows) - reference_rows)
    in_mixed = np.abs(mixed - reference_rows)
    return {
        "texts": len(expected),
        "max_abs_diff": float(max(per_request.max(), in_mixed.max())),
        "mean_abs_diff": float((per_request.mean() + in_mixed.mean()) / 2),
        "top1_agreement": float(np.mean(np.argmax(mixed, 1) == np.argmax(reference_rows, 1))),
    }


# ----------------------------------------------------------------------------------------- 6. served load


def client_processes() -> int:
    """Processes of the multi-process client: half the cores, 2 to 8 (the service keeps the rest)."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def served(
    url: str,
    sets: dict[str, list[str]],
    rounds: int,
    seconds: float,
    via: str = "triton",
    lone: bool = True,
    only_64: bool = False,
    roots: Sequence[int] = (),
) -> dict[str, Any]:
    """Closed-loop load on `url` (Triton's base URL, or the shim's predict URL with via="shim"): 1-text requests
    from 64 clients over several processes (bench/multiclient.py, its CPU reported, and that of each class of the
    processes under `roots`), and, over threads of this process, 16-text requests from 16 clients and a lone
    client."""
    protocol = "shim" if via == "shim" else "triton"
    processes = client_processes()
    scenarios: list[tuple[str, str, int, int, int]] = []  # texts, adapters, per request, clients, processes
    for name in sets:
        for adapters in ("one", "mixed-8"):
            scenarios.append((name, adapters, 1, 64, processes))
    if not only_64:
        scenarios += [("short", "mixed-8", 16, 16, 0)]
    if lone and not only_64:
        scenarios += [("short", "one", 1, 1, 0)]
    results: dict[str, Any] = {}
    for _ in range(rounds):
        for name, adapters, per_request, clients, procs in scenarios:
            ids = ADAPTERS[:1] if adapters == "one" else ADAPTERS
            client_cpu_ms = None
            service_cpu: dict[str, float] = {}
            if procs:
                multi, service_cpu = multi_with_cpu(url, ids, sets[name], clients, seconds, procs, protocol, roots)
                outcome = multi.load
                requests_done = outcome.requests_per_s * outcome.seconds
                client_cpu_ms = multi.client_cpu_s * 1000 / requests_done if requests_done else None
                service_cpu = {k: v * 1000 / requests_done for k, v in service_cpu.items()} if requests_done else {}
            else:
                chosen = SHIM if via == "shim" else TRITON
                outcome = run_load(url, ids, sets[name], per_request, clients, seconds, warmup=1.0, protocol=chosen)
            tokens = sum(token_count(t) for t in sets[name]) / len(sets[name])
            entry = results.setdefault(
                f"{name}/{adapters}/{per_request}x{clients}",
                {
                    "via": via,
                    "texts": name,
                    "adapters": adapters,
                    "texts_per_request": per_request,
                    "clients": clients,
                    "client": f"{procs} processes" if procs else "threads of one process",
                    "texts_per_s": [],
                    "tokens_per_s": [],
                    "p50_ms": [],
                    "p99_ms": [],
                    "client_cpu_ms_per_request": [],
                    "failed": 0,
                },
            )
            entry["texts_per_s"].append(outcome.texts_per_s)
            entry["tokens_per_s"].append(outcome.texts_per_s * tokens)
            entry["p50_ms"].append(outcome.p50_ms)
            entry["p99_ms"].append(outcome.p99_ms)
            if client_cpu_ms is not None:
                entry["client_cpu_ms_per_request"].append(client_cpu_ms)
            for kind, ms in service_cpu.items():
                entry.setdefault("cpu_ms_per_request", {}).setdefault(kind, []).append(ms)
            entry["failed"] += sum(n for status, n in outcome.statuses.items() if status != 200) + outcome.malformed
    return results


def multi_with_cpu(
    url: str,
    ids: Sequence[str],
    texts: list[str],
    clients: int,
    seconds: float,
    processes: int,
    protocol: str,
    roots: Sequence[int],
) -> tuple[MultiResult, dict[str, float]]:
    """1-text requests from `clients` over `processes` processes, and the CPU seconds each class of the processes
    under `roots` spent in the same measured window (none without roots)."""
    warmup = 1.0
    start_at = time.time() + START_DELAY_S
    window = start_at + warmup
    box: list[MultiResult] = []
    driver = threading.Thread(
        target=lambda: box.append(
            run_processes(url, ids, texts, 1, clients, seconds, processes, warmup, protocol, start_at)
        )
    )
    driver.start()
    readings = []
    if roots:
        time.sleep(max(0.0, window - time.time()))
        readings.append(cpu_by_process(list(roots)))
        time.sleep(max(0.0, window + seconds - time.time()))
        readings.append(cpu_by_process(list(roots)))
    driver.join()
    if not box:
        raise RuntimeError("the client processes gave no result")
    spent = cpu_delta(*readings) if readings else {}
    return box[0], {kind: spent[kind] for kind in CLASSES if spent.get(kind)}


# ---------------------------------------------------------------------------------------- 7. perf_analyzer


def perf_analyzer_inputs(work: Path, texts: list[str], adapters: list[str]) -> Path:
    """A perf_analyzer input-data file of 1-text rows, adapters round-robin (bench/perf_analyzer's format)."""
    data = [
        {"TEXT": {"content": [t], "shape": [1]}, "MODEL_ID": {"content": [adapters[i % len(adapters)]], "shape": [1]}}
        for i, t in enumerate(texts)
    ]
    path = work / f"perf-analyzer-{len(adapters)}.json"
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path


def perf_analyzer_figures(
    triton: Triton, unpacked: Unpacked, work: Path, texts: list[str], clients: int = 64
) -> dict[str, Any]:
    """perf_analyzer against Triton, 1-text requests from `clients` concurrent requests, one adapter and 8 mixed:
    its own stable windows (3 s, within 25%), so one run each."""
    binary = unpacked.perf_analyzer or Path(sys.executable).parent / "perf_analyzer"
    env = perf_analyzer_env([unpacked.perf_analyzer_libs] if unpacked.perf_analyzer_libs else [])
    figures: dict[str, Any] = {"clients": clients, "binary": str(binary)}
    for adapters in ("one", "mixed-8"):
        inputs = perf_analyzer_inputs(work, texts, ADAPTERS[:1] if adapters == "one" else ADAPTERS)
        try:
            url = triton.url.removeprefix("http://")
            # one try of at most 6 windows: a bounded share of the device's minutes
            figures[adapters] = run_perf_analyzer(url, inputs, clients, 1, 3000, triton.token, binary, env, 1, 6)
        except Exception as exc:  # recorded: the other figures stand without it
            figures[adapters] = {"error": str(exc)[-1500:]}
        log("perf_analyzer", adapters, figures[adapters])
    return figures


# ------------------------------------------------------------------------------------- 8. through the shim


def start_shim(triton: Triton, unpacked: Unpacked, work: Path) -> tuple[ManagedProcess, str]:
    """The shim under gunicorn with `make serve`'s defaults in front of `triton`, on the packages its image
    installs: the bundle's, over numpy 1 where the machine's numpy is 2 (requirements-api.txt pins 1.26)."""
    paths = [*unpacked.shim_paths]
    if unpacked.numpy_dir is not None and int(np.__version__.split(".")[0]) >= 2:
        paths.append(stub_site_with_numpy(work, unpacked.numpy_dir, name="shim-site"))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*map(str, paths), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "TRITON_URL": triton.url.removeprefix("http://"),
        "TRITON_METRICS_URL": triton.metrics_url,
        "CONTROL_TOKEN": triton.token,
    }
    shim = ManagedProcess(work / f"gunicorn-{port}.log")
    command = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "api_shim" / "gunicorn.conf.py"), "api_shim.wsgi:app"]
    origin = f"http://127.0.0.1:{port}"
    shim.start(command, env, f"{origin}/api/v1/health/live", 60, cwd=REPO)
    return shim, f"{origin}/api/v1/inference/predict"


def served_with_instances(
    start: Callable[[int], tuple[Triton | None, dict[str, Any]]],
    count: int,
    sets: dict[str, list[str]],
    rounds: int,
    seconds: float,
    out: Path,
) -> dict[str, Any]:
    """1-text x 64 clients straight to a tritonserver of `count` instances, started by `start` (start_triton with
    the first start's stub environment); the error instead where it did not serve."""
    triton, attempts = start(count)
    if triton is None:
        return {"error": json.dumps(attempts)[-3000:]}
    try:
        log(f"tritonserver with {count} instances serving")
        return served(triton.url, sets, rounds, seconds, lone=False, only_64=True, roots=[triton.pid])
    except Exception as exc:  # recorded: the other figures stand without it
        log(f"{count} instances:", exc)
        return {"error": str(exc)[-3000:]}
    finally:
        triton.stop()
        shutil.copy(triton.process.log_path, out / f"tritonserver-{count}-instances.log")


def through_shim(
    triton: Triton,
    unpacked: Unpacked,
    work: Path,
    out: Path,
    sets: dict[str, list[str]],
    rounds: int,
    seconds: float,
) -> dict[str, Any]:
    """`served` through the shim, on the short texts; the error instead where the shim did not start."""
    try:
        shim, url = start_shim(triton, unpacked, work)
    except Exception as exc:  # recorded: the other figures stand without it
        log("the shim did not start:", exc)
        return {"error": str(exc)[-3000:]}
    try:
        log("the shim serving at", url)
        roots = [triton.pid, shim.process.pid] if shim.process else [triton.pid]
        return {"served": served(url, {"short": sets["short"]}, rounds, seconds, via="shim", roots=roots)}
    finally:
        shim.stop()
        (out / "gunicorn.log").write_text(shim.log_tail(400))  # its access log is long


# ------------------------------------------------------------------------------------------------- main


def commit_of(bundle: Path, given: str | None = None) -> str:
    """The commit the check runs at: `given` (--commit), else the one bench/gpu/bundle.sh wrote into the bundle
    (with -dirty for uncommitted changes), else git's where the copy has .git. The bundle's comes first: it is
    written from the tree that travels, while the device's copy may hold a .git of another commit (seen on the
    H200 on 2026-12-04: its git named the session's first commit)."""
    if given:
        return given
    written = bundle / "commit"
    commit = written.read_text(encoding="utf-8").strip() if written.is_file() else ""
    return commit or head_commit(REPO) or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--bundle", type=Path, default=REPO / ".gpu", help="what bench/gpu/bundle.sh built")
    parser.add_argument("--commit", help="the commit this copy is at (default: git's, else the bundle's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lora-gpu-check"))
    parser.add_argument("--out", type=Path, default=REPO / "var" / "gpu")
    parser.add_argument("--quick", action="store_true", help="a tiny encoder and short rounds (a CPU rehearsal)")
    parser.add_argument(
        "--machine-numpy-first",
        action="store_true",
        help="with numpy 2, first try the stub on it (it crashes: shows why the numpy 1 site exists)",
    )
    parser.add_argument(
        "--numpy-1-site",
        action="store_true",
        help="rehearsal: give the stub the numpy-1 site even where numpy is 1.x already",
    )
    parser.add_argument("--instances", type=int, default=1, help="lora_classifier instances (KIND_GPU: per GPU)")
    parser.add_argument(
        "--also-instances",
        default="",
        help="more instance counts to serve 1-text x 64 clients with, after the rest (e.g. 2,3): the A/B of the "
        "lever in one device run",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device visible; rehearse with --device cpu --quick")
    rounds, seconds = (1, 1.0) if args.quick else (args.rounds, args.seconds)
    dtype = "float16" if args.device == "cuda" else "float32"
    kind = "gpu" if args.device == "cuda" else "cpu"
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    bundle_site = use_bundle_site(args.bundle)
    figures: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit_of(args.bundle, args.commit),
        "device": args.device,
        "dtype": dtype,
        "quick": args.quick,
        "max_length": MAX_LENGTH,
        "batch": BATCH,
        "instances": args.instances,
    }
    out = args.out / "gpu.json"

    def save() -> None:
        out.write_text(json.dumps(figures, indent=1))

    figures["environment"] = environment()
    if bundle_site:
        figures["environment"]["bundle_site"] = sorted(
            p.name.removesuffix(".dist-info") for p in bundle_site.glob("*.dist-info")
        )
    log("commit", figures["commit"], "environment", json.dumps(figures["environment"]))
    save()
    unpacked = unpack_bundle(args.bundle, args.work)
    shape = TINY if args.quick else BERT_BASE
    figures["encoder"] = shape
    started = time.perf_counter()
    base, root = prepare_models(args.work / ("tiny" if args.quick else "bert-base"), shape)
    figures["prepare_s"] = round(time.perf_counter() - started, 1)
    sets = {"short": short_texts(512), "mixed": mixed_texts(512)}
    log(f"models ready in {figures['prepare_s']} s; tritonserver")
    probe = mixed_texts(16, seed=5)
    plan = stub_numpy_plan(np.__version__, unpacked.numpy_dir, args.machine_numpy_first, args.numpy_1_site)
    triton, figures["triton"] = start_triton(
        args.work,
        base,
        root,
        kind,
        dtype,
        unpacked.triton_site,
        unpacked.numpy_dir,
        plan,
        probe,
        args.out,
        args.instances,
    )
    save()
    if triton is not None:
        try:
            log("tritonserver serving:", figures["triton"])
            figures["parity"] = parity(triton, base, root, mixed_texts(32, seed=3)[:16] + short_texts(16, seed=4))
            log("parity", figures["parity"])
            save()
            figures["served"] = served(triton.url, sets, rounds, seconds, roots=[triton.pid])
            save()
            figures["status"] = service_status(triton, triton.metrics_url)  # type: ignore[arg-type]  (duck-typed)
            log("status", json.dumps(figures["status"]))
            save()
            figures["perf_analyzer"] = perf_analyzer_figures(triton, unpacked, args.work, sets["short"][:64])
            save()
            figures["through_shim"] = through_shim(triton, unpacked, args.work, args.out, sets, rounds, seconds)
        finally:
            triton.stop()
            shutil.copy(triton.process.log_path, args.out / "tritonserver.log")
        save()
        counts = [int(n) for n in args.also_instances.split(",") if n.strip()]
        figures["served_by_instances"] = {str(args.instances): figures["served"]}
        served_stub = figures["triton"]["attempts"][-1]["stub"]  # the environment the first start served with

        def start(count: int) -> tuple[Triton | None, dict[str, Any]]:
            site, numpy_dir, plan = unpacked.triton_site, unpacked.numpy_dir, [served_stub]
            return start_triton(args.work, base, root, kind, dtype, site, numpy_dir, plan, probe, args.out, count)

        for count in counts:
            figures["served_by_instances"][str(count)] = served_with_instances(
                start, count, sets, rounds, seconds, args.out
            )
            save()
    save()
    log("in-process")
    device = "cuda:0" if args.device == "cuda" else "cpu"
    figures["in_process"] = in_process(base, root, device, dtype, sets, rounds, seconds)
    save()
    report(figures)
    return 0 if triton is not None else 1


def report(figures: dict[str, Any]) -> None:
    """The figures as docs/benchmarks.md will show them, and the commit they were measured at."""
    print("\n" + "\n".join(gpu_section(figures)))
    print(f"Measured at commit {figures.get('commit', 'unknown')}.")


if __name__ == "__main__":
    sys.exit(main())
