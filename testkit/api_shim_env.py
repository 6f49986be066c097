"""The one place a shim's environment is built, for tests and benchmarks alike."""

from __future__ import annotations

from collections.abc import Mapping

# The tests' shim: 2 workers x 8 threads, and small limits, so that every 413 can be triggered. Admission is
# off: these tests check every answer, and a storm of loads and predicts on a busy machine may be refused for
# overload, rightly; tests/api_shim/test_overload.py tests admission with shims of its own.
LIMITS = {"MAX_TEXTS_PER_REQUEST": "64", "MAX_TEXT_CHARS": "5000", "MAX_BODY_BYTES": "262144", "MAX_TOP_N": "50"}
TEST_SETTINGS = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "8", "ADMISSION_MAX_WAIT_S": "0", **LIMITS}


def shim_env(triton, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a shim in front of `triton` (its address, metrics and control secret) with
    `settings` on top; None: the tests' settings."""
    return {**triton.shim_settings(), **(TEST_SETTINGS if settings is None else settings)}
