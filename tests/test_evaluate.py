"""Evaluation figures: which bytes bits per byte divides by."""
from __future__ import annotations

import pytest

from lmlab.evaluate import perplexity
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.tokenize import CharTokenizer


@pytest.mark.parametrize("text, unscored", [("abc ab\n", 1), ("Zabc ab\n", 0), ("ééab\n", 2)])
def test_bits_per_byte_leaves_out_the_first_tokens_bytes_only_when_they_are_known(text, unscored):
    """The first token is never predicted, so its bytes are left out, unless it is unknown (its
    real bytes cannot be told from <unk>): then every byte of the text counts."""
    tokenizer = CharTokenizer.train("abc \né")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_len=8, n_layer=1, n_head=1, d_model=8)).eval()
    result = perplexity(model, tokenizer, text)
    assert result.tokens == len(text) - 1
    assert result.bytes == len(text.encode("utf-8")) - unscored
