"""Loads as a client asks for them: the CONTROL document checked at the edge (lora_core.commands), then the
engine given the typed values. Unit tests of the engine's refusals go through here, so that moving a check to
the edge leaves them just as strict."""

from __future__ import annotations

from typing import Any

from lora_core.commands import parse_command


def load_as_client(engine, model_dir: Any, **fields: Any):
    command = parse_command({"op": "load", "model_dir": model_dir, **fields}, engine.max_length_limit)
    return engine.load(command.model_id, command.max_length, reload=command.reload)
