"""A real gunicorn (2 workers) running the shim in front of the session tritonserver."""

from __future__ import annotations

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from testkit.api_shim_env import shim_env
from testkit.shim_harness import ShimServer
from testkit.triton_harness import REPO

OPENAPI = yaml.safe_load((REPO / "api_shim" / "openapi.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def shim(tmp_path_factory, triton):
    server = ShimServer(tmp_path_factory.mktemp("shim"), shim_env(triton))
    server.start()
    yield server
    server.stop()


class Api:
    """HTTP to the shim; every response is checked against openapi.yaml before the test sees it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, f"{self.base}{path}", timeout=120, **kwargs)
        assert_conforms(method, path, response)
        return response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.call("POST", path, **kwargs)

    def loaded(self) -> list[str]:
        return [m["model_id"] for m in self.get("/inference/models").json()["models"] if m["status"] == "loaded"]

    def listed(self) -> dict[str, str]:
        """model_id -> status, for every model the listing shows."""
        return {m["model_id"]: m["status"] for m in self.get("/inference/models").json()["models"]}


def assert_conforms(method: str, path: str, response: requests.Response) -> None:
    """The response's status is documented for this operation and its JSON body matches the schema."""
    operation = OPENAPI["paths"].get(f"/api/v1{path}", {}).get(method.lower())
    if operation is None:  # unknown paths: only the error body shape is promised
        schema_ref = "#/components/schemas/Error"
    else:
        documented = operation["responses"].get(str(response.status_code))
        assert documented is not None, f"{method} {path} answered {response.status_code}, not in openapi.yaml"
        if "$ref" in documented:
            documented = OPENAPI["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
        schema_ref = documented["content"]["application/json"]["schema"].get("$ref")
    assert response.headers["Content-Type"].startswith("application/json")
    if schema_ref:
        validator = Draft202012Validator({"$ref": schema_ref, "components": OPENAPI["components"]})
        errors = sorted(validator.iter_errors(response.json()), key=lambda e: e.path)
        assert not errors, f"{method} {path} {response.status_code}: {errors[0].message} at {list(errors[0].path)}"


@pytest.fixture
def api(shim):
    """The API; whatever a test loaded is unloaded afterwards."""
    client = Api(shim.base)
    yield client
    try:
        for model_id in client.loaded():
            client.post("/inference/models/unload", json={"model_id": model_id})
    except (requests.RequestException, AssertionError):
        pass  # a test that stopped Triton restarts it itself
