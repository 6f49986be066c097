"""Serve many LoRA text classifiers over one resident base encoder. Never imports Triton."""

from .engine import AdapterEngine, Classification, LoadResult, ResidentAdapter
from .errors import AdapterError
from .settings import Settings

__all__ = ["AdapterEngine", "AdapterError", "Classification", "LoadResult", "ResidentAdapter", "Settings"]
