"""The domain errors: each carries its contract code, HTTP status and Triton code, registers itself, and
survives the trip through Triton's error message."""

from __future__ import annotations

import pytest

from lora_core import errors
from lora_core.errors import ERRORS_BY_CODE, AdapterError, InternalError, from_wire, to_wire

TRITON_CODES = {"INVALID_ARG", "NOT_FOUND", "UNAVAILABLE", "INTERNAL"}


def test_every_error_class_is_registered_by_its_code_with_its_statuses():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, AdapterError)]
    assert {c.code for c in classes if c is not AdapterError} == set(ERRORS_BY_CODE)
    for code, cls in ERRORS_BY_CODE.items():
        assert cls.code == code
        assert 400 <= cls.http_status < 600
        assert cls.triton_code in TRITON_CODES
        assert type(from_wire(to_wire(cls("a message: [x]")))) is cls


def test_client_errors_are_not_internal_in_triton():
    for cls in ERRORS_BY_CODE.values():
        assert (cls.triton_code == "INTERNAL") == (cls.http_status == 500), cls


def test_a_new_error_registers_itself_and_a_taken_code_is_refused():
    class TeapotError(AdapterError):
        code, http_status, triton_code = "teapot_test_only", 418, "INVALID_ARG"

    try:
        assert ERRORS_BY_CODE["teapot_test_only"] is TeapotError
        with pytest.raises(TypeError, match="taken"):

            class Again(AdapterError):
                code = "teapot_test_only"
    finally:
        del ERRORS_BY_CODE["teapot_test_only"]


def test_unknown_codes_from_the_wire_are_internal_errors():
    assert from_wire("no code here") is None
    assert type(errors.error_from_code("no_such_code", "x")) is InternalError
