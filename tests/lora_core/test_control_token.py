"""The control secret: checked in constant time, taken out of the document, and no secret means no control."""

from __future__ import annotations

import pytest

from lora_core.control_token import RESTRICTED_API_HEADER, authorize_control, restricted_api_flags
from lora_core.errors import InvalidRequest, Unauthorized


def test_the_right_secret_passes_and_is_removed():
    assert authorize_control({"op": "list", "token": "s3cret"}, "s3cret") == {"op": "list"}


@pytest.mark.parametrize(
    "document",
    [
        {"op": "list"},
        {"op": "list", "token": ""},
        {"op": "list", "token": "s3cre"},
        {"op": "list", "token": "s3cret "},
        {"op": "list", "token": ["s3cret"]},
        {"op": "list", "token": None},
    ],
)
def test_a_missing_or_wrong_secret_is_unauthorized(document):
    with pytest.raises(Unauthorized, match="CONTROL_TOKEN"):
        authorize_control(document, "s3cret")


@pytest.mark.parametrize("document", [{"op": "list"}, {"op": "list", "token": ""}])
def test_a_server_without_a_secret_refuses_all_control(document):
    with pytest.raises(Unauthorized, match="no CONTROL_TOKEN"):
        authorize_control(document, "")


def test_a_document_that_is_not_an_object_is_an_invalid_request():
    with pytest.raises(InvalidRequest):
        authorize_control(["load"], "s3cret")


def test_the_restricted_api_flags_name_every_api_but_inference_health_and_metadata():
    http, grpc = restricted_api_flags("s3cret")
    for flag, name in ((http, "--http-restricted-api"), (grpc, "--grpc-restricted-protocol")):
        option, value = flag.split("=", 1)
        apis, header = value.split(":", 1)
        assert option == name and header == f"{RESTRICTED_API_HEADER}=s3cret"
        assert set(apis.split(",")) == {
            "model-repository",
            "model-config",
            "shared-memory",
            "statistics",
            "trace",
            "logging",
        }
