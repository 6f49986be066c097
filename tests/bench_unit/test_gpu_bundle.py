"""What the GPU check carries (bench/gpu/bundle.sh): its one list of packages, BUNDLE in
bench/gpu/bundle_packages.py, against what the check's code imports, so that a device run does not begin with an
ImportError; the bundle's site as pure Python; and the commit the check records, which the device's copy (no .git)
takes from the bundle."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from bench.gpu import bundle_packages as bp
from bench.gpu import check, render

REPO = Path(__file__).resolve().parents[2]


def test_bundle_holds_exactly_what_the_checks_code_needs_beyond_the_machine():
    needed, unknown = bp.needed()
    bundle = {canonicalize_name(name) for name in bp.BUNDLE}
    assert not unknown, f"imported by the check's code, provided by no installed distribution: {sorted(unknown)}"
    assert not needed - bundle, (
        f"the GPU machine lacks {sorted(needed - bundle)}, which the check's code needs: add to BUNDLE in "
        "bench/gpu/bundle_packages.py"
    )
    assert not bundle - needed, f"BUNDLE carries {sorted(bundle - needed)}, which nothing needs (or the machine has)"


def test_bundle_is_read_by_bundle_sh_from_its_one_list():
    script = (REPO / "bench" / "gpu" / "bundle.sh").read_text(encoding="utf-8")
    assert '-m bench.gpu.bundle_packages --site "$out/site"' in script
    assert '>"$out/commit"' in script


def test_the_walk_reaches_every_module_of_ours_that_importing_the_check_loads():
    """The static walk (bundle_packages.code_imports) against the real thing: every module of ours in sys.modules
    after importing the check, in a fresh interpreter, is one the walk read."""
    code = "import sys, json, bench.gpu.check; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    ours = {name for name in loaded if bp._module_file(name.split(".")[0], [REPO]) is not None}
    walked, others = bp.code_imports()
    assert "bench.gpu.check" in ours and "lora_cluster.etcd" in walked and "model" in walked
    assert ours <= walked, f"loaded, not walked: {sorted(ours - walked)}"
    assert {"etcd3gw", "prometheus_client", "torch", "triton_python_backend_utils"} <= others


def test_the_walk_sees_imports_in_functions_and_skips_type_checking_and_optional_ones(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("import yaml\n")
    (tmp_path / "entry.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from pkg import helper\n"
        "if TYPE_CHECKING:\n"
        "    import flask\n"
        "try:\n"
        "    import brotli\n"
        "except ImportError:\n"
        "    brotli = None\n"
        "def later():\n"
        "    import etcd3gw\n"
    )
    monkeypatch.setattr(bp, "REPO", tmp_path)
    walked, others = bp.code_imports(["entry.py"])
    assert walked == {"entry", "pkg", "pkg.helper"}
    assert others == {"yaml", "etcd3gw"}


def test_machine_packages_and_their_requirements_need_no_bundle():
    machine = bp.on_machine()
    assert {"torch", "transformers", "requests", "urllib3", "safetensors", "huggingface-hub"} <= machine
    assert not machine & {canonicalize_name(name) for name in bp.BUNDLE}


def test_the_bundle_imports_as_pure_python_from_its_site(tmp_path):
    """bundle.sh's site, made the same way, imports on its own: no compiled file in it (wrapt goes without its
    C extension), every bundled module from the site rather than the venv, pbr finds etcd3gw's version there."""
    site = tmp_path / "site"
    left_out = bp.copy_site(site)
    assert all(name.endswith(bp.EXTENSION_SUFFIXES) for name in left_out)
    assert not [p for p in site.rglob("*") if p.name.endswith(bp.EXTENSION_SUFFIXES) or p.suffix == ".pyc"]
    bundle = {canonicalize_name(name) for name in bp.BUNDLE}
    providers = {
        top: bundle & {canonicalize_name(n) for n in names}
        for top, names in metadata.packages_distributions().items()
        if top.isidentifier()
    }
    tops = sorted(top for top, names in providers.items() if names)
    assert set().union(*providers.values()) == bundle  # a module of each
    code = (
        "import sys, json, importlib; sys.path.insert(0, sys.argv[1]); "
        "[importlib.import_module(m) for m in sys.argv[2:]]; "
        "import lora_cluster.etcd, lora_core.prometheus, pbr.version; "
        "print(json.dumps({'files': {n: getattr(m, '__file__', None) or '' for n, m in sys.modules.items()}, "
        "'etcd3gw': pbr.version.VersionInfo('etcd3gw').version_string()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(site), *tops],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    mine = {name: file for name, file in answer["files"].items() if name.split(".")[0] in tops and file}
    assert mine and all(file.startswith(str(site)) for file in mine.values()), mine
    assert "wrapt._wrappers" not in answer["files"]
    assert answer["etcd3gw"] == metadata.version("etcd3gw")


# ------------------------------------------------------------------------------------------ the commit


def test_commit_given_wins(tmp_path):
    assert check.commit_of(tmp_path, "0123abc") == "0123abc"


def test_commit_from_git_where_the_bundle_has_none(tmp_path):
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("this copy has no .git, or no git")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert check.commit_of(tmp_path).removesuffix("-dirty") == head.stdout.strip()


def test_the_bundles_commit_wins_over_a_git_in_the_copy(tmp_path):
    (tmp_path / "commit").write_text("93374b4\n")  # what travelled; the copy's .git may be of another commit
    assert check.commit_of(tmp_path) == "93374b4"


def test_commit_from_the_bundle_where_the_copy_has_no_git(tmp_path, monkeypatch):
    monkeypatch.setattr(check, "REPO", tmp_path / "copy")  # the device's copy: no .git
    bundle = tmp_path / "bundle"
    assert check.commit_of(bundle) == "unknown"
    bundle.mkdir()
    (bundle / "commit").write_text("b0fd48e-dirty\n")
    assert check.commit_of(bundle) == "b0fd48e-dirty"


def test_report_prints_the_commit(capsys):
    figures = render.load_results()
    assert figures is not None
    check.report({**figures, "commit": "b0fd48e"})
    assert "Measured at commit b0fd48e." in capsys.readouterr().out


# ------------------------------------------------------------------------------- the site on the path


@pytest.mark.parametrize(
    ("argv", "bundle"),
    [
        (["--bundle", "/b", "--out", "/o"], Path("/b")),
        (["--device", "cpu", "--bundle=.gpu2"], Path(".gpu2")),
        (["--quick"], REPO / ".gpu"),
    ],
)
def test_bundle_is_read_before_argparse(argv, bundle):
    assert check.bundle_of(argv) == bundle


def test_bundle_site_goes_first_on_every_import_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    # set, then removed: recorded, so that what use_bundle_site sets is undone after the test (a subprocess of a
    # later test would otherwise inherit it, and model.py take its packages from it alone)
    monkeypatch.setenv("LORA_CLASSIFIER_PYTHONPATH", "")
    monkeypatch.delenv("LORA_CLASSIFIER_PYTHONPATH")
    assert check.use_bundle_site(tmp_path) is None and os.environ["PYTHONPATH"] == "/elsewhere"

    (tmp_path / "site").mkdir()
    site = str((tmp_path / "site").resolve())
    assert check.use_bundle_site(tmp_path) == Path(site)
    check.use_bundle_site(tmp_path)  # once only
    assert sys.path[0] == site and sys.path.count(site) == 1
    assert os.environ["PYTHONPATH"] == os.pathsep.join([site, "/elsewhere"])
    assert os.environ["LORA_CLASSIFIER_PYTHONPATH"] == site
