"""Generated texts for benchmarks: one token per word with the generated tokenizer (testkit.factories)."""

from __future__ import annotations

import random

from testkit.factories import WORDS

VOCABULARY = WORDS + "the service classifies short customer messages about orders refunds and delivery".split()


def make_texts(count: int, words: int, seed: int = 0, vary: bool = False) -> list[str]:
    """`count` texts of `words` words (with `vary`, of 2 to `words` words each)."""
    rng = random.Random(seed)
    if vary:
        return [" ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(2, words))) for _ in range(count)]
    return [" ".join(rng.choice(VOCABULARY) for _ in range(words)) for _ in range(count)]


def short_texts(count: int, seed: int = 0) -> list[str]:
    """About 16 tokens each (14 words, plus [CLS] and [SEP])."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(14)) for _ in range(count)]


def mixed_texts(count: int, seed: int = 1) -> list[str]:
    """Real traffic's mix of lengths: 70% of 3-25 words, 25% of 25-110, 5% of 110-400."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        draw = rng.random()
        low, high = (3, 25) if draw < 0.70 else (25, 110) if draw < 0.95 else (110, 400)
        texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))))
    return texts
