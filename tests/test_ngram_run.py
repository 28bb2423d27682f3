"""The n-gram family through the same tools as every other: train, load, eval, generate, score."""
from __future__ import annotations

import math
from pathlib import Path

import lmlab
from lmlab.evaluate.score import score_sentence
from lmlab.train import train

LINES = ["the cat sat on the mat", "the dog sat on the log", "the cat ate the fish"] * 50


def test_ngram_trains_evaluates_generates_and_scores(tmp_path: Path):
    corpus = tmp_path / "words.txt"
    corpus.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    result = train(str(corpus), out=tmp_path / "run", model="ngram", tokenizer="word",
                   model_overrides={"order": 3, "smoothing": "kn"}, progress=False)
    assert result.val_loss is not None and 0 < result.val_loss < math.log(20)
    bundle = lmlab.load(tmp_path / "run")
    assert bundle.model.config.eos_id == bundle.tokenizer.special_tokens["<eos>"]
    # Every token (and each line's <eos>) of the validation text is predicted and counted.
    scored = bundle.perplexity("the cat sat on the mat\n")
    assert scored.tokens == 7 and math.isfinite(scored.loss)
    text = bundle.generate("the cat", max_new_tokens=6, do_sample=False).text
    assert text.split()[0] in {"sat", "ate"}
    likely = score_sentence(bundle.model, bundle.tokenizer, "the cat sat on the mat")
    unlikely = score_sentence(bundle.model, bundle.tokenizer, "mat the on sat cat the")
    assert likely.logprob > unlikely.logprob
    assert len(likely.tokens) == 7  # six words and the end of the sentence
