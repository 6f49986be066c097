"""The generated test encoder is meaningful: its tokenizer knows the vocabulary the tests write with."""

import pytest
from transformers import AutoTokenizer

from testkit.factories import CJK, WORDS


def test_generated_tokenizer_does_not_map_test_texts_to_unknown(base_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    tokens = tokenizer.tokenize(" ".join(WORDS[:50]) + " " + CJK)
    assert "[UNK]" not in tokens
    assert len(set(tokenizer(WORDS[:50])["input_ids"][i][1] for i in range(50))) == 50


@pytest.mark.parametrize("text", ["baba dede", "类别好坏"])
def test_tokenizer_round_trips_through_save_and_load(base_dir, text):
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True).replace(" ", "") == text.replace(
        " ", ""
    )
