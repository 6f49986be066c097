"""The environment of a test shim: the session tritonserver and small limits, so every 413 can be triggered."""

from __future__ import annotations

LIMITS = {"MAX_TEXTS_PER_REQUEST": "64", "MAX_TEXT_CHARS": "5000", "MAX_BODY_BYTES": "262144", "MAX_TOP_N": "50"}


def shim_env(triton) -> dict[str, str]:
    return {
        **triton.shim_settings(),
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "8",
        **LIMITS,
    }
