"""Triton's perf_analyzer runs against lora_classifier with the committed input data and reports throughput."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from testkit.triton_harness import REPO


def test_perf_analyzer_reports_throughput_for_one_and_eight_adapters(triton, client):
    command = [
        sys.executable,
        "-m",
        "bench.perf_analyzer.run",
        "--url",
        triton.url,
        "--no-in-process",
        "--concurrency",
        "2",
        "--inputs",
        "one_adapter_short,mixed8_short",
        "--measurement-ms",
        "800",
    ]
    env = {**os.environ, "CONTROL_TOKEN": triton.control_token}  # the script loads its adapters through CONTROL
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+)\s+2\s+([\d.]+)\s", done.stdout, re.M)}
    assert set(rows) == {"one_adapter_short", "mixed8_short"}, done.stdout
    assert all(texts_per_second > 0 for texts_per_second in rows.values())
    assert sorted(client.loaded()) == [f"bench-{i}" for i in range(8)]  # the script loaded them via CONTROL
