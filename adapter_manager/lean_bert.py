"""A lean forward for BERT encoders: the same arithmetic as transformers' `BertModel`, without its layers of Python.

Every call of a transformers module passes through `nn.Module.__call__`, keyword merging, config lookups,
output-capture wrappers and mask builders. On a tiny encoder, or on a GPU where the kernels are quick, that
Python is most of a batch's CPU: measured here, the engine's 1-text classify on a tiny encoder costs 0.65 ms of
CPU with this forward and 1.2 ms with transformers' (bench/levers.md). This one reads the same parameters (and
the engine's LoRA wrappers, with their plans) and runs the same operations in the same order, so it agrees with
the HF forward to float rounding (tests/adapter_manager/test_lean_bert.py).

Only plain BERT encoders take this path (`lean_forward` says None otherwise): absolute positions, no decoder,
no cross-attention, no feed-forward chunking. Anything else runs the HF forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .lora import MultiLoraLinear

Linear = nn.Linear | MultiLoraLinear


@dataclass(frozen=True)
class _Embeddings:
    words: torch.Tensor
    token_types: torch.Tensor
    positions: torch.Tensor
    norm: nn.LayerNorm


@dataclass(frozen=True)
class _Layer:
    query: Linear
    key: Linear
    value: Linear
    attention_out: Linear
    attention_norm: nn.LayerNorm
    intermediate: Linear
    activation: Callable[[torch.Tensor], torch.Tensor]
    output: Linear
    output_norm: nn.LayerNorm


def _linear(module: Linear, x: torch.Tensor) -> torch.Tensor:
    """The module's output, with its LoRA plan added when it has one (what MultiLoraLinear.forward does)."""
    if type(module) is MultiLoraLinear:
        base = module.base
        y = F.linear(x, base.weight, base.bias)
        plan = module.plan
        return y if plan is None else plan.apply(x, y)
    return F.linear(x, module.weight, module.bias)


def _norm(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


class LeanBert:
    """`model`'s forward, for a model `supports` accepted. Call `refresh` after the module tree changes
    (a Linear wrapped for LoRA), so that the forward reads the wrapper."""

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model  # a BertModel: its submodules by name (nn.Module types them as Tensor | Module)
        config: Any = model.config
        self.heads = int(config.num_attention_heads)
        self.head_size = int(config.hidden_size) // self.heads
        self.scaling = self.head_size**-0.5
        self.embeddings: _Embeddings
        self.layers: list[_Layer] = []
        self.refresh()

    @staticmethod
    def supports(model: nn.Module) -> bool:
        config: Any = getattr(model, "config", None)
        return (
            config is not None
            and type(model).__name__ == "BertModel"
            and getattr(config, "model_type", None) == "bert"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False)
            and not getattr(config, "add_cross_attention", False)
            and not getattr(config, "chunk_size_feed_forward", 0)
            and isinstance(getattr(config, "hidden_act", None), str)
            and config.hidden_act in ACT2FN
            and int(config.hidden_size) % int(config.num_attention_heads) == 0
        )

    def refresh(self) -> None:
        embeddings = self.model.embeddings
        self.embeddings = _Embeddings(
            words=embeddings.word_embeddings.weight,
            token_types=embeddings.token_type_embeddings.weight,
            positions=embeddings.position_embeddings.weight,
            norm=embeddings.LayerNorm,
        )
        activation = ACT2FN[self.model.config.hidden_act].forward  # the module's call, without nn.Module's
        self.layers = [
            _Layer(
                query=layer.attention.self.query,
                key=layer.attention.self.key,
                value=layer.attention.self.value,
                attention_out=layer.attention.output.dense,
                attention_norm=layer.attention.output.LayerNorm,
                intermediate=layer.intermediate.dense,
                activation=activation,
                output=layer.output.dense,
                output_norm=layer.output.LayerNorm,
            )
            for layer in self.model.encoder.layer
        ]

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The last hidden state, [batch, length, hidden]. `attention_mask` None: no row is padded (the caller
        knows from its lengths; asking the mask would wait on the device)."""
        embeddings = self.embeddings
        length = input_ids.shape[1]
        hidden = F.embedding(input_ids, embeddings.words)
        types = embeddings.token_types
        hidden = hidden + (types[0] if token_type_ids is None else F.embedding(token_type_ids, types))
        hidden = hidden + embeddings.positions[:length]
        hidden = _norm(embeddings.norm, hidden)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # the keys a row may see
        batch = input_ids.shape[0]
        split = (batch, length, self.heads, self.head_size)
        for layer in self.layers:
            query = _linear(layer.query, hidden).view(split).transpose(1, 2)
            key = _linear(layer.key, hidden).view(split).transpose(1, 2)
            value = _linear(layer.value, hidden).view(split).transpose(1, 2)
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=self.scaling)
            attended = attended.transpose(1, 2).reshape(batch, length, -1)
            hidden = _norm(layer.attention_norm, _linear(layer.attention_out, attended) + hidden)
            inner = layer.activation(_linear(layer.intermediate, hidden))
            hidden = _norm(layer.output_norm, _linear(layer.output, inner) + hidden)
        return hidden


def lean_forward(model: nn.Module) -> LeanBert | None:
    """The lean forward of `model`, or None where only the HF forward is right for it."""
    return LeanBert(model) if LeanBert.supports(model) else None
