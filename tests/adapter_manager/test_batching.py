"""Length-aware runs: every row exactly once, sorted by length, within the token budget and the padding
bound; and what they buy on a mixed-length batch."""

from __future__ import annotations

import random

import pytest

from adapter_manager.batching import MAX_PADDING_SHARE, length_runs


def padded(lengths: list[int], run: list[int]) -> int:
    return len(run) * max(lengths[row] for row in run)


def real(lengths: list[int], run: list[int]) -> int:
    return sum(lengths[row] for row in run)


@pytest.mark.parametrize("seed", range(20))
def test_runs_cover_every_row_once_within_the_budget_and_the_padding_bound(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(3, 30), rng.randint(30, 120), rng.randint(120, 256)]) for _ in range(64)]
    budget = rng.choice([512, 2048, 16384])
    runs = length_runs(lengths, budget)
    assert sorted(row for run in runs for row in run) == list(range(len(lengths)))
    assert all(run for run in runs)
    flat = [lengths[row] for run in runs for row in run]
    assert flat == sorted(flat)  # shortest first, so each run is one slice of the sorted rows
    for run in runs:
        assert padded(lengths, run) <= budget or len(run) == 1
        assert padded(lengths, run) - real(lengths, run) <= MAX_PADDING_SHARE * padded(lengths, run)


def test_equal_lengths_stay_one_run_until_the_budget():
    assert length_runs([10] * 8, 10_000) == [list(range(8))]
    assert [len(run) for run in length_runs([10] * 8, 30)] == [3, 3, 2]


def test_a_row_longer_than_the_budget_runs_alone():
    assert length_runs([5, 300, 5], 256) == [[0, 2], [1]]


def test_a_mixed_batch_wastes_far_less_padding_than_arrival_order():
    rng = random.Random(7)  # 70% short, 25% medium, 5% long, as in real traffic
    lengths = [
        rng.randint(5, 30) if r < 0.7 else rng.randint(30, 130) if r < 0.95 else rng.randint(130, 256)
        for r in (rng.random() for _ in range(32))
    ]
    runs = length_runs(lengths, 16384)
    efficiency = sum(lengths) / sum(padded(lengths, run) for run in runs)
    assert efficiency > 0.8
    assert sum(lengths) / (len(lengths) * max(lengths)) < 0.4  # one padded batch, as before
