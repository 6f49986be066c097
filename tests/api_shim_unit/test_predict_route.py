"""Predict, answered before Flask (api_shim/predict_route.py), answers every request as a Flask route does: the
same statuses, bodies and headers as Flask's routes for the same faults, the same body limits, counted in the same
metrics. (tests/api_shim sends the same faults to a real gunicorn and Triton.)"""

from __future__ import annotations

import io
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_shim.app import create_app
from api_shim.settings import ShimSettings
from lora_core.metric_names import LORA_API_REQUEST_SECONDS, LORA_API_REQUESTS_IN_FLIGHT, LORA_API_REQUESTS_TOTAL
from testkit.process_harness import free_port

PREDICT = "/api/v1/inference/predict"
QUERY = "/api/v1/inference/models/query"  # a Flask route that reads its JSON body the same way
LIMIT = 2000


@pytest.fixture
def app(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # one process: its own registry answers
    port = free_port()  # nothing listens: Triton is unreachable
    settings = ShimSettings.load(
        {
            "TRITON_URL": f"127.0.0.1:{port}",
            "TRITON_METRICS_URL": f"http://127.0.0.1:{port}/metrics",
            "TRITON_TIMEOUT_S": "5",
            "MAX_BODY_BYTES": str(LIMIT),
            "API_KEY": "the-key",
            "ADMISSION_MAX_WAIT_S": "0",
        }
    )
    return create_app(settings)


KEY = {"X-API-Key": "the-key"}

BODY_FAULTS = [
    pytest.param(b'{"model_id": "a"}', "text/plain", id="not-declared-json"),
    pytest.param(b'{"model_id": "a"', "application/json", id="truncated"),
    pytest.param(b"null", "application/json", id="null"),
    pytest.param(b"[1, 2]", "application/json", id="array"),
    pytest.param(b'"text"', "application/json", id="string"),
    pytest.param(b"[" * 50_000 + b"]" * 50_000, "application/json", id="nested-deep"),
    pytest.param(b'{"model_id": "\xff"}', "application/json", id="invalid-utf8"),
    pytest.param(b'{"x": "' + b"y" * LIMIT + b'"}', "application/json", id="over-the-limit"),
    pytest.param(b"", "application/json", id="empty"),
]


def answer(response) -> tuple[int, dict, str, str]:
    return response.status_code, response.json, response.headers["Content-Type"], response.headers["Content-Length"]


def same_answer(predict, query) -> None:
    """The same status, error code, Content-Type and message (the message may name its field, not its path)."""
    assert answer(predict)[0] == answer(query)[0]
    assert predict.json == query.json
    assert predict.headers["Content-Type"] == query.headers["Content-Type"] == "application/json"
    assert predict.get_data() == query.get_data()


@pytest.mark.parametrize("data, content_type", BODY_FAULTS)
def test_a_bad_body_is_answered_as_flask_answers_it(app, data, content_type):
    client = app.test_client()
    predict = client.post(PREDICT, data=data, content_type=content_type, headers=KEY)
    query = client.post(QUERY, data=data, content_type=content_type, headers=KEY)
    assert predict.status_code in (400, 413)
    same_answer(predict, query)


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}], ids=str)
def test_a_missing_or_wrong_key_is_answered_as_flask_answers_it(app, headers):
    client = app.test_client()
    predict = client.post(PREDICT, json={"model_id": "a", "texts": ["x"]}, headers=headers)
    query = client.post(QUERY, json={"model_ids": ["a"]}, headers=headers)
    assert predict.status_code == 401
    same_answer(predict, query)
    assert predict.headers["WWW-Authenticate"] == query.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize("headers", [KEY, {"Authorization": "Bearer the-key"}, {"Authorization": "bearer  the-key "}])
def test_the_key_is_taken_from_either_header(app, headers):
    response = app.test_client().post(PREDICT, json={"model_id": "a", "texts": ["x"]}, headers=headers)
    assert response.status_code == 503 and response.json["error"] == "backend_unavailable"  # past the key


def test_other_methods_on_the_path_go_to_flask(app):
    client = app.test_client()
    response = client.get(PREDICT, headers=KEY)
    assert response.status_code == 405 and response.json["error"] == "invalid_request"
    assert "POST" in client.options(PREDICT, headers=KEY).headers["Allow"]


def call(app, body: bytes | io.RawIOBase, **environ) -> tuple[str, dict]:
    """The status line and JSON body of POST predict sent straight to the WSGI app, `environ` on top: with no
    CONTENT_LENGTH, as gunicorn passes a chunked body (wsgi.input_terminated)."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PREDICT,
        "CONTENT_TYPE": "application/json",
        "HTTP_X_API_KEY": "the-key",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body) if isinstance(body, bytes) else body,
        "wsgi.input_terminated": True,
        **environ,
    }
    started: list[str] = []
    parts = app(environ, lambda status, headers: started.extend([status, headers]))
    return started[0], json.loads(b"".join(parts))


def test_a_chunked_body_is_read_to_the_limit_and_no_further(app):
    fits = json.dumps({"model_id": "a", "texts": []}).encode()
    fits += b" " * (LIMIT - len(fits))
    status, body = call(app, fits)
    assert status == "400 BAD REQUEST" and body["message"] == "texts must not be empty"  # read whole, then judged
    status, body = call(app, fits + b" ")
    assert status == "413 REQUEST ENTITY TOO LARGE" and body == {
        "error": "payload_too_large",
        "message": f"the request body is larger than {LIMIT} bytes",
    }


class Dropped(io.RawIOBase):
    """A request body whose client went away: reading it fails as gunicorn's does then."""

    def read(self, size: int = -1) -> bytes:
        raise ConnectionResetError("connection reset by peer")


@pytest.mark.parametrize(
    "body, environ",
    [
        pytest.param(Dropped(), {}, id="reset-mid-chunked-body"),
        pytest.param(Dropped(), {"CONTENT_LENGTH": "40"}, id="reset-mid-body"),
        pytest.param(b'{"model_id": "a"', {"CONTENT_LENGTH": "40"}, id="shorter-than-its-length"),
    ],
)
def test_a_body_cut_short_is_the_clients_fault_not_a_500(app, body, environ, caplog):
    status, answer = call(app, body, **environ)
    assert status == "400 BAD REQUEST" and answer == {
        "error": "invalid_request",
        "message": "the request body ended before it was complete",
    }
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


@pytest.mark.parametrize(
    "environ", [{"PATH_INFO": "//" + PREDICT.lstrip("/")}, {"REQUEST_METHOD": "post"}], ids=["double-slash", "post"]
)
def test_a_spelling_only_flasks_routing_matches_is_answered_by_the_same_code(app, environ):
    invalid = json.dumps({"model_id": "a", "texts": []}).encode()
    canonical = call(app, invalid, CONTENT_LENGTH=str(len(invalid)))
    assert canonical == ("400 BAD REQUEST", {"error": "invalid_request", "message": "texts must not be empty"})
    assert call(app, invalid, CONTENT_LENGTH=str(len(invalid)), **environ) == canonical
    valid = json.dumps({"model_id": "a", "texts": ["x"]}).encode()
    status, answer = call(app, valid, CONTENT_LENGTH=str(len(valid)), **environ)
    assert status == "503 SERVICE UNAVAILABLE" and answer["error"] == "backend_unavailable"  # on to Triton


def samples(app) -> dict:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_predict_is_counted_by_its_route_and_status(app):
    client = app.test_client()
    before = samples(app)
    client.post(PREDICT, json={"model_id": "a", "texts": []}, headers=KEY)  # 400
    client.post(PREDICT, json={"model_id": "a", "texts": ["x"]})  # 401
    client.post(PREDICT, json={"model_id": "a", "texts": ["x"]}, headers=KEY)  # 503: no Triton
    after = samples(app)

    def counted(status: str) -> float:
        key = (LORA_API_REQUESTS_TOTAL, (("endpoint", PREDICT), ("status", status)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert [counted(s) for s in ("400", "401", "503", "200")] == [1, 1, 1, 0]
    seconds = (f"{LORA_API_REQUEST_SECONDS}_count", (("endpoint", PREDICT),))
    assert after[seconds] - before.get(seconds, 0.0) == 3
    # Each one counted out again, failures too (the scrape counts itself, before and after).
    assert after[(LORA_API_REQUESTS_IN_FLIGHT, ())] == before[(LORA_API_REQUESTS_IN_FLIGHT, ())] == 1
