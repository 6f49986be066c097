"""Triton-level tests use the session tritonserver from tests/conftest.py through LoraClient."""

from __future__ import annotations

import pytest

from testkit.triton_harness import LoraClient


@pytest.fixture
def client(triton):
    """A client; whatever a test loaded is unloaded afterwards, so tests do not see each other's models."""
    lora = LoraClient(triton.url)
    yield lora
    for model_id in lora.loaded():
        lora.control({"op": "unload", "model_id": model_id})
    lora.close()
