"""Schemathesis against api_shim/openapi.yaml and the real shim (gunicorn + tritonserver).

Every operation of openapi.yaml gets schema-valid (positive) and schema-invalid (negative) requests from
Schemathesis' examples, coverage and fuzzing phases, bounded by MAX_EXAMPLES fuzzed examples per operation.
Each response must not be a 5xx, must carry a status documented for the operation, a documented content
type, and a body matching the documented schema; a schema-invalid request must not be accepted (2xx).

The counts of what was sent are written to the terminal at the end (`-s` shows them) and to
$FUZZ_COUNTS_FILE when that is set.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import hypothesis
import pytest
import requests
import schemathesis
import yaml
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from testkit.triton_harness import REPO

REAL_MODEL = "alpha"  # one of tests/conftest.py's MODELS
MAX_EXAMPLES = 40  # fuzzed examples per operation (the examples and coverage phases add their own)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# No codec restriction: every operation, load included, gets the full UTF-8 alphabet. (Load was once fuzzed
# with ASCII only, while non-ASCII model dirs failed inside Triton's Python stub, whose file-system encoding
# is ASCII; adapter_manager.layout now reaches them through their UTF-8 bytes.)


def _without_prefix_items(node):
    """Schemathesis 4.32.5 rewrites `prefixItems` to draft-7 `items: [...]` in response schemas and then checks
    them as Draft 2020-12, where that is invalid ("Invalid Schema Object in response definition"; upstream
    schemathesis#3842/#4099). For the fuzz only, a tuple [A, B] becomes "items A or B, and contains each of
    them": the same except for the order. tests/api_shim/conftest.py still checks the exact prefixItems."""
    if isinstance(node, list):
        return [_without_prefix_items(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _without_prefix_items(value) for key, value in node.items()}
    if isinstance(node.get("prefixItems"), list) and "items" not in node:
        prefix = node.pop("prefixItems")
        node["items"] = {"anyOf": prefix}
        node["allOf"] = [*node.get("allOf", []), *({"contains": item} for item in prefix)]
    return node


OPENAPI = _without_prefix_items(yaml.safe_load((REPO / "api_shim" / "openapi.yaml").read_text(encoding="utf-8")))
schema = schemathesis.openapi.from_dict(OPENAPI)
SENT: Counter[tuple[str, str, str]] = Counter()  # (operation, phase, positive|negative) -> requests sent
STATUSES: Counter[tuple[str, int]] = Counter()  # (operation, HTTP status) -> responses


@pytest.fixture(scope="module")
def fuzz_session(shim):
    session = requests.Session()
    yield session
    session.close()
    _report()


@pytest.fixture
def base_url(shim, fuzz_session):
    """openapi.yaml's paths start at /api/v1; its server is the shim's origin."""
    yield shim.origin
    # nothing the fuzz loaded may stay resident for the next test
    models = fuzz_session.get(f"{shim.base}/inference/models", timeout=60).json().get("models", [])
    for model in models:
        if model["status"] == "loaded":
            fuzz_session.post(f"{shim.base}/inference/models/unload", json={"model_id": model["model_id"]}, timeout=60)


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_conforms_to_openapi(case, base_url, fuzz_session):
    mode = case.meta.generation.mode.value if case.meta else "?"
    key = (case.operation.label, case.meta.phase.name.value if case.meta else "?", mode)
    SENT[key] += 1
    if mode == "positive" and SENT[key] % 2 == 0:
        _aim_at_a_real_model(case, base_url, fuzz_session)
    response = case.call(base_url=base_url, session=fuzz_session, timeout=60)
    STATUSES[(case.operation.label, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)


def _aim_at_a_real_model(case, base_url: str, session: requests.Session) -> None:
    """Random ids only ever reach the 404 paths; every other schema-valid case names the real model `alpha`
    instead (loaded first where the operation needs it), so the 200 paths of load, unload, predict and query
    are fuzzed too. Only positive cases are changed: a negative one must stay invalid."""
    body = case.body
    if not isinstance(body, dict):
        return
    label = case.operation.label
    if label.endswith("/models/load") and "model_dir" in body:
        body["model_dir"] = REAL_MODEL
    elif label.endswith(("/models/unload", "/predict")) and "model_id" in body:
        body["model_id"] = REAL_MODEL
        load = session.post(f"{base_url}/api/v1/inference/models/load", json={"model_dir": REAL_MODEL}, timeout=60)
        assert load.status_code == 200, load.text
    elif label.endswith("/models/query") and isinstance(body.get("model_ids"), list):
        body["model_ids"] = [*body["model_ids"], REAL_MODEL]


def _report() -> None:
    per_operation: Counter[str] = Counter()
    for (operation, _, _), n in SENT.items():
        per_operation[operation] += n
    lines = [
        f"{op}: {n} requests; statuses "
        + ", ".join(f"{status}: {count}" for (o, status), count in sorted(STATUSES.items()) if o == op)
        for op, n in sorted(per_operation.items())
    ]
    lines += [f"  {op} {phase} {mode}: {n}" for (op, phase, mode), n in sorted(SENT.items())]
    lines.append(f"total: {sum(SENT.values())} requests")
    print("\nschemathesis requests sent\n" + "\n".join(lines))
    if os.environ.get("FUZZ_COUNTS_FILE"):
        with open(os.environ["FUZZ_COUNTS_FILE"], "w", encoding="utf-8") as f:
            json.dump(
                {
                    "sent": {"|".join(k): v for k, v in sorted(SENT.items())},
                    "statuses": {f"{op}|{status}": v for (op, status), v in sorted(STATUSES.items())},
                },
                f,
                indent=1,
            )
