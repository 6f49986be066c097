"""The engine asks its fast tokenizer directly (adapter_manager/engine.py `_encode_texts`): the ids are those of
the tokenizer's own call, for every text and truncation length, in any order of lengths."""

from __future__ import annotations

import random

from testkit.factories import random_text

SPECIAL = "[CLS] ba [SEP] [MASK] [PAD] [UNK] ka"


def texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    fixed = ["", " ", SPECIAL, "类别 好坏 新闻", "ba" * 300, "Ba, KA! 123 ?", "\u200b\x00 ba"]
    return fixed + [random_text(rng, rng.randint(0, 60)) for _ in range(30)]


def test_the_ids_are_the_tokenizers_own(engine):
    batch = texts(3)
    for length in (512, 8, 3, 128, 8, 512):  # truncation set, changed and set back
        expected = engine.tokenizer(batch, truncation=True, max_length=length)["input_ids"]
        assert engine._token_ids(batch, [length] * len(batch)) == expected


def test_rows_of_several_lengths_in_one_batch_each_get_their_own(engine):
    batch = texts(4)
    rng = random.Random(5)
    lengths = [rng.choice([4, 16, 512]) for _ in batch]
    got = engine._token_ids(batch, lengths)
    for text, length, ids in zip(batch, lengths, got):
        assert ids == engine.tokenizer([text], truncation=True, max_length=length)["input_ids"][0]
        assert len(ids) <= length
