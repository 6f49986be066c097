"""Length-aware runs: every row exactly once, sorted by length, within the token budget and the padding
bound; what they buy on a mixed-length batch; and, where a forward has a fixed cost (a GPU), fewer runs that
each save more than that cost."""

from __future__ import annotations

import random

import pytest

from adapter_manager.batching import MAX_PADDING_SHARE, length_runs


def padded(lengths: list[int], run: list[int]) -> int:
    return len(run) * max(lengths[row] for row in run)


def real(lengths: list[int], run: list[int]) -> int:
    return sum(lengths[row] for row in run)


def mixed_lengths(rng: random.Random, rows: int) -> list[int]:
    """70% short, 25% medium, 5% long, as in real traffic."""
    return [
        rng.randint(5, 30) if r < 0.7 else rng.randint(30, 130) if r < 0.95 else rng.randint(130, 256)
        for r in (rng.random() for _ in range(rows))
    ]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("forward_tokens", [0, 300, 4000])
def test_runs_cover_every_row_once_within_the_budget_and_the_padding_bound(seed, forward_tokens):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(3, 30), rng.randint(30, 120), rng.randint(120, 256)]) for _ in range(64)]
    budget = rng.choice([512, 2048, 16384])
    runs = length_runs(lengths, budget, forward_tokens=forward_tokens)
    assert sorted(row for run in runs for row in run) == list(range(len(lengths)))
    assert all(run for run in runs)
    flat = [lengths[row] for run in runs for row in run]
    assert flat == sorted(flat)  # shortest first, so each run is one slice of the sorted rows
    for i, run in enumerate(runs):
        assert padded(lengths, run) <= budget or len(run) == 1
        waste = padded(lengths, run) - real(lengths, run)
        assert waste <= max(MAX_PADDING_SHARE * padded(lengths, run), forward_tokens)
        if i + 1 < len(runs) and padded(lengths, run + runs[i + 1][:1]) <= budget:
            # cut only where taking the next run's first row in would pass both bounds
            grown = run + runs[i + 1][:1]
            assert padded(lengths, grown) - real(lengths, grown) > max(
                MAX_PADDING_SHARE * padded(lengths, grown), forward_tokens
            )


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("rows", [8, 32, 64, 200])
def test_a_fixed_cost_per_forward_means_fewer_runs_and_never_more(seed, rows):
    lengths = mixed_lengths(random.Random(seed), rows)
    counts = [len(length_runs(lengths, 16384, forward_tokens=f)) for f in (0, 100, 1000, 4000, 16384)]
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] == len(length_runs(lengths, 16384, max_padding=1.0))  # only the budget cuts


def test_a_forward_costing_more_than_any_padding_leaves_one_run_within_the_budget():
    lengths = [5, 9, 40, 250, 7, 120]
    assert length_runs(lengths, 16384, forward_tokens=16384) == [sorted(range(6), key=lambda r: lengths[r])]
    assert len(length_runs(lengths, 16384)) > 1  # a CPU's forward cuts them


def test_equal_lengths_stay_one_run_until_the_budget():
    assert length_runs([10] * 8, 10_000) == [list(range(8))]
    assert [len(run) for run in length_runs([10] * 8, 30)] == [3, 3, 2]


def test_a_row_longer_than_the_budget_runs_alone():
    assert length_runs([5, 300, 5], 256) == [[0, 2], [1]]


def test_a_mixed_batch_wastes_far_less_padding_than_arrival_order():
    lengths = mixed_lengths(random.Random(7), 32)
    runs = length_runs(lengths, 16384)
    efficiency = sum(lengths) / sum(padded(lengths, run) for run in runs)
    assert efficiency > 0.8
    assert sum(lengths) / (len(lengths) * max(lengths)) < 0.4  # one padded batch, as before
