"""The shared secret that every control operation carries, and the header that opens Triton's restricted APIs.

Anyone who can reach Triton's ports can infer; only the shim, which holds the secret, can load, unload, list
or read status. The model refuses every control operation when it has no secret: it never falls back to open.
Torch-free: the shim imports it too.
"""

from __future__ import annotations

import hmac
from typing import Any

from lora_core.errors import InvalidRequest, Unauthorized

# The field of a CONTROL document that carries the secret.
TOKEN_FIELD = "token"
# The header Triton's restricted APIs (--http-restricted-api, --grpc-restricted-protocol) check for the same secret.
RESTRICTED_API_HEADER = "lora-control-token"
# Everything but inference, health and metadata answers only requests that carry the header.
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")


def authorize_control(document: Any, expected: str) -> dict[str, Any]:
    """The CONTROL document without its secret, once the secret is checked (in constant time)."""
    if not isinstance(document, dict):
        raise InvalidRequest("CONTROL must be a JSON object with an 'op' field")
    if not expected:
        raise Unauthorized("control operations are disabled: this server has no CONTROL_TOKEN")
    supplied = document.get(TOKEN_FIELD)
    if not isinstance(supplied, str) or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("control operations need this server's CONTROL_TOKEN")
    return {k: v for k, v in document.items() if k != TOKEN_FIELD}


def restricted_api_flags(token: str) -> list[str]:
    """tritonserver flags that restrict every API but inference, health and metadata to holders of `token`."""
    apis = ",".join(RESTRICTED_APIS)
    return [
        f"--http-restricted-api={apis}:{RESTRICTED_API_HEADER}={token}",
        f"--grpc-restricted-protocol={apis}:{RESTRICTED_API_HEADER}={token}",
    ]
