"""The layers the tree shows: the core every process imports is the standard library only, and the cluster layer
(lora_cluster: etcd3gw, requests) is imported by the Triton model and the shim only when ETCD_ENDPOINTS is set.

Each check runs in a fresh interpreter whose import system refuses what the layer must not need, so that a
package present in the development venv cannot hide a dependency (the shim's image failed at import that way).
"""

from __future__ import annotations

import os
import subprocess
import sys

from testkit.triton_harness import REPO

CORE_MODULES = sorted(p.stem for p in (REPO / "lora_core").glob("*.py") if p.stem != "__init__")
NOT_STANDARD_LIBRARY = {"prometheus"}  # reads Triton's metrics for the shim and the node agent (requests)

_REFUSE = """
import importlib.abc, sys
class Refused(importlib.abc.MetaPathFinder):
    def __init__(self, allowed, refused):
        self.allowed, self.refused = allowed, refused
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in self.refused or (self.allowed is not None and top not in self.allowed):
            raise ImportError(f"{name}: refused by the layer check")
"""


def clean_environment(**settings: str) -> dict[str, str]:
    """This environment without the stub's path variable, which other tests' servers may have left in it: with it
    set, model.py takes the packages from it alone."""
    env = {k: v for k, v in os.environ.items() if k != "LORA_CLASSIFIER_PYTHONPATH"}
    return {**env, "PYTHONPATH": str(REPO), **settings}


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _REFUSE + code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environment(**env),
    )


def test_the_core_imports_with_the_standard_library_alone() -> None:
    modules = [m for m in CORE_MODULES if m not in NOT_STANDARD_LIBRARY]
    assert {"errors", "settings", "etcd_settings", "commands", "control_token", "metric_names"} <= set(modules)
    done = run_python(
        "sys.meta_path.insert(0, Refused(set(sys.stdlib_module_names) | {'lora_core'}, set()))\n"
        f"for name in {modules!r}:\n"
        "    __import__('lora_core.' + name)\n"
        "print('ok')\n"
    )
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-3000:]


_MODEL_WITHOUT_ETCD = """
import types
sys.meta_path.insert(0, Refused(None, {"lora_cluster", "etcd3gw"}))
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")  # the stub's own
import importlib.util
spec = importlib.util.spec_from_file_location("model", "model_repository/lora_classifier/1/model.py")
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
from adapter_manager.desired_state import desired_state_store
from adapter_manager.settings import Settings
store = desired_state_store(Settings.load(None, {"STATE_DIR": sys.argv[1]}))
print(type(store).__name__, sorted(m for m in sys.modules if m.split(".")[0] in {"lora_cluster", "etcd3gw"}))
"""


def test_the_model_needs_no_cluster_layer_without_etcd(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _REFUSE + _MODEL_WITHOUT_ETCD, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environment(ETCD_ENDPOINTS=""),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["AdapterManifest", "[]"]


def test_with_etcd_set_the_shim_and_the_model_reach_for_the_cluster_layer() -> None:
    """The other side: with ETCD_ENDPOINTS set, the cluster layer is what they use (refused here, so it shows)."""
    shim = run_python(
        "sys.meta_path.insert(0, Refused(None, {'lora_cluster'}))\nfrom api_shim.app import create_app\ncreate_app()\n",
        ETCD_ENDPOINTS="http://127.0.0.1:9",
        ADMISSION_MAX_WAIT_S="0",
    )
    assert shim.returncode != 0 and "ImportError: lora_cluster: refused by the layer check" in shim.stderr
    model = run_python(
        "sys.meta_path.insert(0, Refused(None, {'lora_cluster'}))\n"
        "from adapter_manager.desired_state import desired_state_store\n"
        "from adapter_manager.settings import Settings\n"
        "desired_state_store(Settings.load())\n",
        ETCD_ENDPOINTS="http://127.0.0.1:9",
    )
    assert model.returncode != 0 and "ImportError: lora_cluster: refused by the layer check" in model.stderr
