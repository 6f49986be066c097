"""The pages for people: the operator console at `/` and Swagger UI at `/api/v1/docs`, both served by the shim
itself (no CDN: the service must work on a network with no internet).

Neither carries model data: the console fetches it from the API, with the key when one is set. Their paths, and
only those, need no key (`NO_KEY_PATHS`, matched exactly, never by prefix).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Flask, Response
from flask_swagger_ui import get_swaggerui_blueprint

CONSOLE_PATH = Path(__file__).with_name("console.html")
DOCS_URL = "/api/v1/docs"
OPENAPI_URL = "/api/v1/openapi.json"
# The files flask-swagger-ui bundles and serves under DOCS_URL.
SWAGGER_DIST = Path(str(files("flask_swagger_ui") / "dist"))

NO_KEY_PATHS = frozenset(
    {
        "/",
        "/metrics",
        OPENAPI_URL,
        "/api/v1/health/live",
        "/api/v1/health/ready",
        DOCS_URL,  # redirects to DOCS_URL/
        f"{DOCS_URL}/",
        f"{DOCS_URL}/index.html",
        *(f"{DOCS_URL}/{asset.name}" for asset in SWAGGER_DIST.iterdir() if asset.is_file()),
    }
)

console = Blueprint("console", __name__)


def _sha256_source(html: str, tag: str) -> str:
    """The CSP source that allows the page's one inline <script> or <style>, and nothing else."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    if len(blocks) != 1:
        raise ValueError(f"{CONSOLE_PATH.name} must hold exactly one inline <{tag}>, found {len(blocks)}")
    digest = hashlib.sha256(blocks[0].encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


@cache
def console_page_and_policy() -> tuple[str, str]:
    """The console and a policy that runs only its own script: an injected `<img onerror=...>` would not run
    even if a label ever reached the page as HTML (the page renders labels as text)."""
    html = CONSOLE_PATH.read_text(encoding="utf-8")
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256_source(html, 'script')}",
            f"style-src {_sha256_source(html, 'style')}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return html, policy


@console.get("/")
def console_page() -> Response:
    html, policy = console_page_and_policy()
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


def install(app: Flask) -> None:
    app.register_blueprint(console)
    docs = get_swaggerui_blueprint(
        DOCS_URL,
        OPENAPI_URL,
        # The key stays in the page's memory: Swagger UI's "persistAuthorization" would keep it in localStorage.
        # No validator badge: it would call validator.swagger.io, and the service runs without internet.
        config={
            "app_name": "LoRA inference API",
            "persistAuthorization": False,
            "tryItOutEnabled": True,
            "validatorUrl": None,
        },
    )
    app.register_blueprint(docs)
