"""Triton's perf_analyzer, one measurement: the binary from the tritonclient platform wheel (this venv's, or one
given), which needs Debian's libb64-0d and PyPI's nvidia-cuda-runtime-cu12 (both installed by `make venv`).
Free of tritonclient's Python and of the test kit, so that the GPU check can run it on a machine without them.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lora_core.control_token import RESTRICTED_API_HEADER


def perf_analyzer_env(libraries: Sequence[Path] = ()) -> dict[str, str]:
    """This environment, with `libraries` (folders) and this venv's CUDA runtime first on LD_LIBRARY_PATH."""
    runtime = Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ)
    folders = [*map(str, libraries), str(runtime), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in folders if p)
    return env


def perf_analyzer(
    url: str,
    input_file: Path,
    concurrency: int,
    batch: int,
    measurement_ms: int,
    token: str,
    binary: Path | None = None,
    env: dict[str, str] | None = None,
    attempts: int = 3,
    max_trials: int = 8,
) -> dict[str, float]:
    """One perf_analyzer measurement: texts/s and latency percentiles in ms. `token` is the server's control
    secret; `binary` (default: this venv's) runs with `env` (default: perf_analyzer_env()).

    perf_analyzer gives up when a shared machine's noise keeps its windows apart for `max_trials` windows, or
    when a window is too short for one request; then it is tried again, up to `attempts` in all, with windows
    twice, then four times, as long.
    """
    command = [
        str(binary or Path(sys.executable).parent / "perf_analyzer"),
        *("-m", "lora_classifier", "-u", url, "-i", "http", "--input-data", str(input_file), "-b", str(batch)),
        *("--concurrency-range", str(concurrency), "--stability-percentage", "25", "--max-trials", str(max_trials)),
        # model config and statistics are restricted APIs: they answer only holders of the control secret
        *("-H", f"{RESTRICTED_API_HEADER}:{token}"),
    ]
    for attempt in range(attempts):
        try:
            window = ["--measurement-interval", str(measurement_ms << attempt)]
            return _perf_analyzer_once(command + window, env or perf_analyzer_env())
        except RuntimeError as exc:
            if attempt == attempts - 1 or not any(s in str(exc) for s in ("stable measurement", "larger time window")):
                raise
    raise AssertionError("unreachable")


def _perf_analyzer_once(command: list[str], env: dict[str, str]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".csv") as report:
        done = subprocess.run([*command, "-f", report.name], capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(
                f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        row = next(csv.DictReader(io.StringIO(Path(report.name).read_text())))
    return {
        "texts_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
    }
