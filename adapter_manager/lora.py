"""Batched LoRA: one base forward in which every row of the batch may use a different adapter.

Each adapted base `Linear` is wrapped once in a `MultiLoraLinear`. Before a forward the engine hands each
wrapper a `RowLora` plan (which adapter's A and B apply to which row); the wrapper adds that row's delta
to the base output. The work per row is the same whether the batch holds one adapter or many: rows are
gathered into per-row A/B stacks and applied with one `bmm` pair, instead of a loop over adapters.
A `ModuleBank` stacks the batch's adapters once per module; the engine keeps recent banks per adapter set.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class ModuleWeights:
    """One adapter's weights for one Linear, transposed for `x @ a_t @ b_t`, on the engine's device/dtype."""

    a_t: torch.Tensor  # [in_features, rank]
    b_t: torch.Tensor  # [rank, out_features], LoRA scaling folded in


@dataclass(frozen=True)
class RowLora:
    """The LoRA delta for one Linear over one batch.

    Either `shared` (every row uses the same adapter: two plain matmuls), or per-row stacks
    `a_rows [B, in, r]` and `b_rows [B, r, out]` with zeros for rows whose adapter leaves this module alone.
    """

    shared: ModuleWeights | None = None
    a_rows: torch.Tensor | None = None
    b_rows: torch.Tensor | None = None

    def apply(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.shared is not None:
            return y.add_((x @ self.shared.a_t) @ self.shared.b_t)
        a_rows, b_rows = self.a_rows, self.b_rows
        assert a_rows is not None and b_rows is not None  # not shared: ModuleBank.rows set both
        if x.dim() == 2:  # [B, in]: treat each row as a sequence of length one
            return y.add_(torch.bmm(torch.bmm(x.unsqueeze(1), a_rows), b_rows).squeeze(1))
        return y.add_(torch.bmm(torch.bmm(x, a_rows), b_rows))  # baddbmm costs an extra `where` pass


class MultiLoraLinear(nn.Module):
    """A base Linear plus the current batch's per-row LoRA deltas (none when no plan is set)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.plan: RowLora | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # some model code reads .weight of its projections
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def set_plan(self, plan: RowLora | None) -> None:
        """What `self.plan = plan` does, without nn.Module's checks for tensors and modules (a plan is neither):
        the engine sets every wrapper's plan twice per batch."""
        self.__dict__["plan"] = plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        plan = self.plan
        return y if plan is None else plan.apply(x, y)


@dataclass(frozen=True)
class ModuleBank:
    """Several adapters' weights for one Linear, stacked so that rows can pick theirs with one gather.

    Slot i holds adapter i; with `offset` 1, slot 0 is zeros (for adapters that leave this module alone)
    and adapter i sits in slot i + 1. Ranks below the bank's rank are zero-padded, which adds nothing.
    """

    a: torch.Tensor  # [slots, in_features, rank]
    b: torch.Tensor  # [slots, rank, out_features]
    offset: int

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + self.b.nbytes

    def rows(self, row_adapter: torch.Tensor) -> RowLora:
        slots = row_adapter + self.offset if self.offset else row_adapter
        return RowLora(a_rows=self.a.index_select(0, slots), b_rows=self.b.index_select(0, slots))


def stack_module(per_adapter: Sequence[ModuleWeights | None]) -> ModuleBank | None:
    """The bank of `per_adapter` (adapter i's weights for this module, None where it does not adapt it);
    None when no adapter adapts the module."""
    present = [w for w in per_adapter if w is not None]
    if not present:
        return None
    ranks = {w.a_t.shape[1] for w in present}
    if len(present) == len(per_adapter) and len(ranks) == 1:
        # Common case: every adapter adapts this module at one rank, so no padding is needed.
        return ModuleBank(torch.stack([w.a_t for w in present]), torch.stack([w.b_t for w in present]), 0)
    rank = max(ranks)
    in_features, out_features = present[0].a_t.shape[0], present[0].b_t.shape[1]
    like = present[0].a_t
    a_bank = like.new_zeros((len(per_adapter) + 1, in_features, rank))
    b_bank = like.new_zeros((len(per_adapter) + 1, rank, out_features))
    for i, weights in enumerate(per_adapter, start=1):
        if weights is not None:
            r = weights.a_t.shape[1]
            a_bank[i, :, :r] = weights.a_t
            b_bank[i, :r, :] = weights.b_t
    return ModuleBank(a_bank, b_bank, 1)


def wrap_linear(model: nn.Module, module_name: str) -> MultiLoraLinear:
    """Replace the Linear at `module_name` with a `MultiLoraLinear` (idempotent) and return the wrapper."""
    parent_name, _, child_name = module_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    child = getattr(parent, child_name)
    if isinstance(child, MultiLoraLinear):
        return child
    if not isinstance(child, nn.Linear):
        raise TypeError(f"{module_name} is {type(child).__name__}, not a Linear")
    wrapper = MultiLoraLinear(child)
    setattr(parent, child_name, wrapper)
    return wrapper
