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
    for dtype in ("bfloat16", "int8"):  # no weights to convert: the tables stay as they are
        assert lmlab.load(tmp_path / "run", dtype=dtype).generate("the cat", max_new_tokens=6,
                                                                   do_sample=False).text == text


def test_arpa_export_loads_back_everywhere(tmp_path: Path, capsys):
    """`lmlab export --format arpa` writes what KenLM reads; `lmlab.load` and the commands read it
    back with the same probabilities as the run."""
    import kenlm
    import pytest

    from lmlab.cli import main

    corpus = tmp_path / "words.txt"
    corpus.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    train(str(corpus), out=tmp_path / "run", model="ngram", tokenizer="word", tokenizer_options={"split_punctuation": False},
          model_overrides={"order": 3, "smoothing": "mkn"}, progress=False)
    assert main(["export", str(tmp_path / "run"), "--format", "arpa", "--out", str(tmp_path / "m.arpa.gz")]) == 0
    run, arpa = lmlab.load(tmp_path / "run"), lmlab.load(tmp_path / "m.arpa.gz")
    for sentence in ["the cat sat on the log", "a bird sat on the mat"]:
        ours = score_sentence(run.model, run.tokenizer, sentence).logprob
        assert score_sentence(arpa.model, arpa.tokenizer, sentence).logprob == pytest.approx(ours, abs=1e-4)
        assert kenlm.Model(str(tmp_path / "m.arpa.gz")).score(sentence) * math.log(10) == pytest.approx(ours, abs=1e-4)
    assert arpa.generate("the cat", max_new_tokens=3, do_sample=False).text == \
        run.generate("the cat", max_new_tokens=3, do_sample=False).text
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "m.arpa.gz"), "--data", str(corpus), "--json"]) == 0
    assert main(["eval", str(tmp_path / "m.arpa.gz")]) == 2
    assert "pass --data FILE" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--format", "arpa", "--out", str(tmp_path / "m.txt")]) == 2
    assert "*.arpa" in capsys.readouterr().err
