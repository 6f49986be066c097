"""The shim's access line is gunicorn's, character for character, for any request, and a format an operator
changes is written by gunicorn's own code."""

from __future__ import annotations

import datetime
import logging
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from api_shim.access_log import ACCESS_LOG_FORMAT, ShimLogger


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def written(logger_class: type[Logger], access_format: str, resp, environ, took) -> str:
    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", access_format)
    logger = logger_class(config)
    lines = Lines()
    logger.access_log.handlers = [lines]
    logger.access(resp, SimpleNamespace(headers=[("HOST", "x"), ("X-API-KEY", "k")]), environ, took)
    assert len(lines.lines) == 1
    return lines.lines[0]


REQUESTS = [
    pytest.param("POST", "/api/v1/inference/predict", "200 OK", 311, 0.0042, "10.0.0.7", id="predict"),
    pytest.param("GET", '/x?q="a" b', "404 NOT FOUND", 64, 1.5, "::1", id="quotes-in-the-request-line"),
    pytest.param("GET", "/api/v1/health/live", "200 OK", None, 0.000_9, None, id="nothing-sent-no-address"),
    pytest.param("POST", "/api/v1/inference/predict", "429 TOO MANY REQUESTS", 0, 61.0001, '1.2.3.4"', id="odd"),
]


OTHER_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(b)s "%(a)s" %({host}i)s %(D)s'  # one an operator might set


@pytest.mark.parametrize("method, uri, status, sent, seconds, address", REQUESTS)
@pytest.mark.parametrize("access_format", [ACCESS_LOG_FORMAT, OTHER_FORMAT], ids=["ours", "other"])
def test_the_line_is_gunicorns(method, uri, status, sent, seconds, address, access_format, monkeypatch):
    monkeypatch.setattr(Logger, "now", lambda self: "[04/Dec/2026:22:00:00 +0000]")
    environ = {"REQUEST_METHOD": method, "RAW_URI": uri, "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": uri}
    if address is not None:
        environ["REMOTE_ADDR"] = address
    resp = SimpleNamespace(status=status, sent=sent, headers=[("Content-Type", "application/json")])
    took = datetime.timedelta(seconds=seconds)
    ours = written(ShimLogger, access_format, resp, environ, took)
    assert ours == written(Logger, access_format, resp, environ, took)
    if access_format == ACCESS_LOG_FORMAT:
        assert uri.replace('"', '\\"') in ours and ours.endswith("ms")
