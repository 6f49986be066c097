"""Length-aware sub-batches: which rows of a batch go through the encoder together.

A padded batch costs its row count times its longest row, so a batch that mixes a 5-token text with a
250-token one spends most of its work on padding. The rows are sorted by token count and cut into runs of
similar length, as TEI does with `max_batch_tokens`: a run ends where one more row would take its padded
size past the token budget, or its padding past a share of that size and past what one more forward costs.
Rows still mix adapters within a run; the caller puts results back in request order.

On a CPU a forward costs about its padded tokens, so cutting pays from the first padded token. On a GPU a
forward also has a fixed cost (its kernel launches and the Python that issues them): at BERT-base's size on an
H200, a forward of 64 rows of 128 tokens cost no more than one of a short row, and cutting 64 mixed-length rows
at 25% padding into 6 or 7 runs served a quarter of what one padded forward did (docs/gpu.md). `forward_tokens`
is that fixed cost in padded tokens (AdapterEngine measures it on a GPU); padding is cut away only where it
costs more.
"""

from __future__ import annotations

from collections.abc import Sequence

# A run is cut where padding would pass this share of its padded tokens. From the token counts of mixed
# traffic (70% short, 25% medium, 5% long), cutting sorted windows of 32 rows at 25% keeps real tokens at 0.89
# of padded ones, against 0.91 for a global sort and 0.23 for arrival order.
MAX_PADDING_SHARE = 0.25


def length_runs(
    lengths: Sequence[int], max_tokens: int, max_padding: float = MAX_PADDING_SHARE, forward_tokens: int = 0
) -> list[list[int]]:
    """Row indices grouped into runs of similar length, shortest first. A run's padded size (rows x its
    longest) stays within `max_tokens` unless one row alone is longer, and its padding within `max_padding`
    of that size or within `forward_tokens`, whichever is larger; a run is never empty."""
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    runs: list[list[int]] = []
    current: list[int] = []
    real = 0  # tokens of the rows in `current`
    for row in order:
        length = lengths[row]
        if current:
            padded = (len(current) + 1) * length  # sorted: this row is the run's longest
            if padded > max_tokens or padded - (real + length) > max(max_padding * padded, forward_tokens):
                runs.append(current)
                current, real = [], 0
        current.append(row)
        real += length
    if current:
        runs.append(current)
    return runs
