"""Pooling of the encoder's last hidden states into one vector per text (shared by engine and trainer)."""

from __future__ import annotations

import torch

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """`cls`: the first token's state; `mean`: the attention-masked mean over the sequence."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
