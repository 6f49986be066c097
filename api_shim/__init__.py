"""The REST shim: the /api/v1/inference contract in front of Triton. Holds no state; never imports torch."""

from .app import create_app

__all__ = ["create_app"]
