"""The GPU check's parts that need no server: what it unpacks from a bundle, the perf_analyzer input it writes,
the shim's packages it carries, and the section's new tables (instances, perf_analyzer, the shim) from figures
that include failures."""

from __future__ import annotations

import copy
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name

from bench.gpu import bundle_packages as bp
from bench.gpu import check, render


def _tar_xz(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_unpack_bundle_lays_out_numpy_the_shims_wheels_and_perf_analyzer_with_its_libraries(tmp_path, monkeypatch):
    bundle, work = tmp_path / "bundle", tmp_path / "work"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "shim" / "flask").mkdir(parents=True)
    _tar_xz(bundle / "numpy-1.26.4.tar.xz", {"numpy/__init__.py": b"", "numpy-1.26.4.dist-info/METADATA": b""})
    with zipfile.ZipFile(bundle / "wheels" / "gevent-26.9.0-cp312-cp312-manylinux_2_28_x86_64.whl", "w") as wheel:
        wheel.writestr("gevent/__init__.py", "")
    (bundle / "perf_analyzer.xz").write_bytes(lzma.compress(b"#!/bin/sh\n"))
    version = f"{check.sys.version_info.major}.{check.sys.version_info.minor}"
    _tar_xz(
        bundle / "tritonserver.tar.xz",
        {
            f"pytriton/tritonserver/python_backend_stubs/{version}/triton_python_backend_stub": b"",
            "nvidia_pytriton.libs/libb64-98cb6333.so.0d": b"b64",
            "nvidia_pytriton.libs/libcudart-09529672.so.12.6.77": b"cudart",
        },
    )
    found = check.unpack_bundle(bundle, work)
    assert found.triton_site == work / "triton-site"
    assert (found.numpy_dir / "numpy" / "__init__.py").is_file()
    assert found.shim_paths == [work / "shim-compiled", (bundle / "shim").resolve()]
    assert (work / "shim-compiled" / "gevent" / "__init__.py").is_file()
    assert found.perf_analyzer.read_bytes() == b"#!/bin/sh\n" and found.perf_analyzer.stat().st_mode & 0o111
    libs = found.perf_analyzer_libs
    assert (libs / "libb64.so.0d").read_bytes() == b"b64"  # the names perf_analyzer's ELF asks for
    assert (libs / "libcudart.so.12").read_bytes() == b"cudart"
    again = check.unpack_bundle(bundle, work)  # a second run over the same work folder
    assert again == found


def test_unpack_bundle_of_nothing_is_nothing(tmp_path):
    assert check.unpack_bundle(tmp_path / "none", tmp_path / "work") == check.Unpacked()


def test_perf_analyzer_input_is_one_text_per_row_with_adapters_round_robin(tmp_path):
    path = check.perf_analyzer_inputs(tmp_path, ["a", "b", "c"], ["x", "y"])
    rows = json.loads(path.read_text())["data"]
    assert [r["TEXT"]["content"] for r in rows] == [["a"], ["b"], ["c"]]
    assert [r["MODEL_ID"]["content"][0] for r in rows] == ["x", "y", "x"]
    assert all(r["TEXT"]["shape"] == [1] for r in rows)


def test_the_shims_packages_are_what_its_image_installs_beyond_the_machine_split_by_compiled():
    pure, compiled = bp.shim_needed()
    assert {"flask", "gunicorn", "tritonclient", "blinker", "itsdangerous"} <= pure
    assert {"gevent", "geventhttpclient", "greenlet", "python-rapidjson"} <= compiled
    assert not (pure | compiled) & (bp.on_machine() | {canonicalize_name(b) for b in bp.BUNDLE})
    assert all(not bp.compiled_files(name) or name in bp.UNUSED_COMPILED for name in pure)
    assert all(bp.compiled_files(name) for name in compiled)
    assert bp.wheel_version_312("geventhttpclient") == "2.0.10"  # 2.0.2 has no 3.12 wheel


def test_closure_follows_the_extras_a_requirement_names():
    plain = bp.closure(["tritonclient"])
    with_http = bp.closure(["tritonclient[http]"])
    assert "geventhttpclient" not in plain and "geventhttpclient" in with_http


def _figures() -> dict:
    figures = copy.deepcopy(render.load_results())
    assert figures is not None
    return figures


def test_the_section_shows_each_instance_count_and_a_failed_one():
    figures = _figures()
    one = figures["served"]
    figures["served_by_instances"] = {"1": one, "2": copy.deepcopy(one), "3": {"error": "Traceback\nboom: no GPU"}}
    section = "\n".join(render.gpu_section(figures))
    assert "**KIND_GPU instances**" in section
    rows = [line for line in section.splitlines() if line.startswith(("| 1 |", "| 2 |", "| 3 |"))]
    assert len(rows) == 3 and rows[2] == "| 3 | failed: boom: no GPU |"
    assert rows[0].count("(") == 4  # one figure and its ratio per 1-text x 64 scenario


def test_the_section_shows_perf_analyzer_failures_and_a_shim_that_did_not_start():
    figures = _figures()
    figures["perf_analyzer"]["one"] = {"error": "perf_analyzer failed (2):\nFailed to obtain stable measurement.\n"}
    figures["through_shim"] = {"error": "RuntimeError: not answering\nModuleNotFoundError: No module named 'x'"}
    section = "\n".join(render.gpu_section(figures))
    assert "| one | failed: Failed to obtain stable measurement. | | | |" in section
    assert "The shim did not start: `ModuleNotFoundError: No module named 'x'`." in section


def test_the_section_gives_the_roofline_only_for_a_card_whose_peak_it_knows():
    figures = _figures()
    assert "of peak" in "\n".join(render.gpu_section(figures))
    figures["environment"]["gpu"]["name"] = "Some Card"
    assert "of peak" not in "\n".join(render.gpu_section(figures))


def test_the_services_cpu_per_request_is_shown_by_process_in_a_fixed_order():
    assert render.service_cpu({}) == "-"
    shown = render.service_cpu({"tritonserver": [0.05, 0.07, 0.06], "stubs": [0.3], "shim": [0.61, 0.6]})
    assert shown == "shim 0.60, stubs 0.30, tritonserver 0.06"


def test_cpu_delta_counts_each_class_and_a_process_that_started_meanwhile_from_zero():
    from bench.process_cpu import cpu_delta

    before = {1: ("shim", 10.0), 2: ("stubs", 5.0)}
    after = {1: ("shim", 12.5), 2: ("stubs", 6.0), 3: ("stubs", 0.25)}
    assert cpu_delta(before, after) == {"shim": 2.5, "tritonserver": 0.0, "stubs": 1.25, "other": 0.0}


def test_cpu_by_process_finds_this_process_and_its_children(tmp_path):
    import os
    import subprocess
    import sys

    from bench.process_cpu import cpu_by_process

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = cpu_by_process([os.getpid()])
        assert os.getpid() in found and child.pid in found
        # (servers that other tests' fixtures started are children of this process too, in their own classes)
        assert found[os.getpid()][0] == "other" and found[child.pid][0] == "other"
        assert all(seconds >= 0 for _, seconds in found.values())
    finally:
        child.kill()
        child.wait()
