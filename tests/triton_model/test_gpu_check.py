"""The GPU check's parts that a CPU can run: the stub's numpy-1 site, the plan of stub environments, its HTTP
client and the Triton protocol of the load generator against the real tritonserver, and the page section."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import loadgen
from bench.gpu import check, render


def test_stub_site_links_everything_but_numpy_2_builds_and_takes_the_carried_numpy(tmp_path: Path):
    own, carried = tmp_path / "own", tmp_path / "carried"
    for name in (
        "torch",
        "transformers",
        "transformers-5.17.0.dist-info",
        "scipy",
        "scipy-1.16.0.dist-info",
        "scipy.libs",
        "sklearn",
        "scikit_learn-1.7.0.dist-info",
        "pandas",
        "numpy",
        "numpy-2.5.2.dist-info",
        "numpy.libs",
        "numpyro",
        "ml_dtypes",
    ):
        (own / name).mkdir(parents=True)
    for name in ("numpy", "numpy-1.26.4.dist-info", "numpy.libs"):
        (carried / name).mkdir(parents=True)

    site = check.stub_site_with_numpy(tmp_path / "work", carried, own=own)

    entries = {p.name: p.resolve() for p in site.iterdir()}
    assert set(entries) == {
        "torch",
        "transformers",
        "transformers-5.17.0.dist-info",
        "numpy",
        "numpy-1.26.4.dist-info",
        "numpy.libs",
    }
    assert entries["numpy"] == carried / "numpy" and entries["torch"] == own / "torch"


@pytest.mark.parametrize(
    ("version", "carried", "machine_first", "rehearse", "plan"),
    [
        ("1.26.4", True, False, False, ["machine"]),
        ("2.5.2", True, False, False, ["numpy-1-site"]),
        ("2.5.2", True, True, False, ["machine", "numpy-1-site"]),
        ("2.5.2", False, False, False, ["machine"]),  # nothing better to offer: the crash is then reported
        ("1.26.4", False, False, True, ["numpy-1-site"]),
    ],
)
def test_stub_plan_gives_numpy_2_machines_the_numpy_1_site(version, carried, machine_first, rehearse, plan):
    assert check.stub_numpy_plan(version, Path("/x") if carried else None, machine_first, rehearse) == plan


def test_the_preflight_imports_what_the_model_imports():
    answer = check.preflight(None)
    assert answer["rc"] == 0, answer["output"]
    assert answer["output"].startswith("numpy ")


def test_http_client_and_shim_status_against_real_triton(triton, client):
    from api_shim.status import service_status

    client.control({"op": "load", "model_dir": "alpha"})
    http = check.TritonHttp(
        f"http://{triton.url}", f"http://127.0.0.1:{triton.metrics_port}/metrics", triton.control_token
    )
    rows = http.predict(["first text", "second text"], ["alpha", "alpha"])
    assert rows.shape[0] == 2 and abs(rows[0].sum() - 1) < 1e-4

    # Triton samples host memory once per metrics interval (1 s): wait for a sample rather than for time.
    deadline = time.monotonic() + 30
    while (status := service_status(http, http.metrics_url))["workers"][0]["total_memory_mb"] == 0:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)

    assert status["service_status"] == "running"
    assert status["loaded_models_count"] >= 1
    assert [w["device"] for w in status["workers"]] == ["cpu"] * status["total_workers"]
    assert all(w["total_memory_mb"] > 0 for w in status["workers"])


def test_load_generator_speaks_triton_protocol(triton, client):
    client.control({"op": "load", "model_dir": "gamma"})
    result = loadgen.run_load(
        f"http://{triton.url}",
        ["gamma"],
        ["one two three", "four five"],
        2,
        2,
        seconds=1.0,
        warmup=0.2,
        protocol=loadgen.TRITON,
    )
    assert result.statuses and set(result.statuses) == {200}
    assert result.malformed == 0 and result.texts_per_s > 0


def test_gpu_section_renders_the_committed_figures_and_replaces_itself():
    figures = render.load_results()
    assert figures is not None, "docs/gpu/results.json holds the last GPU run"
    section = render.gpu_section(figures)
    assert section[0] == render.HEADING
    text = "\n".join(section)
    assert "Parity" in text and "A lone request" in text and "Status" in text

    page = "# Benchmarks\n\n## Levers\n\nx\n\n## Plots\n\n![a](a.png)\n"
    once = render.replace_section(page, section)
    assert render.replace_section(once, section) == once
    assert once.index("## Levers") < once.index(render.HEADING) < once.index("## Plots")
