"""Serve many LoRA text classifiers over one resident base encoder. Never imports Triton.

Everything here may import torch; what the REST shim shares with it lives in the torch-free `lora_core`.
"""

from lora_core.errors import AdapterError

from .engine import AdapterEngine, Classification, LoadResult, ResidentAdapter
from .settings import Settings

__all__ = ["AdapterEngine", "AdapterError", "Classification", "LoadResult", "ResidentAdapter", "Settings"]
