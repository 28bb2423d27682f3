"""N-gram models: the hand-checked seed example, distributions that sum to 1 for every smoothing,
parity with a plain dictionary implementation of the smoothing formulas, forward/step agreement,
ARPA round trips and KenLM as the oracle for the exported files, saving, and PTB perplexity."""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lmlab.errors import LmlabError
from lmlab.models.ngram import NGramConfig, NGramLM
from lmlab.io.arpa import read_arpa, write_arpa
from lmlab.models.ngram_smoothing import (FALLBACK_DISCOUNTS, SMOOTHINGS, adjusted_counts, count_ngrams, count_of_counts,
                                          mkn_discounts, sentence_stream)
from lmlab.tokenize.word import WordTokenizer

SMOOTHED = ["add-k", "witten-bell", "kn", "mkn"]
EXPORTABLE = ["witten-bell", "kn", "mkn"]
EOS = 1  # WordTokenizer(eos_per_line=True): <unk> 0, <eos> 1
RARE = list(range(42, 66))  # seen 1 to 4 times each
UNSEEN = (66, 67)  # in the vocabulary, never in training
VOCAB = 68


def zipf_sentences(n_sentences: int = 1500, n_words: int = 40, seed: int = 0) -> list[list[int]]:
    """Sentences of ids 2..n_words+1 (0 = <unk>, 1 = <eos> never inside), Zipf-distributed, with some
    repeated phrases so that higher orders have counts above 1, and RARE words seen 1 to 4 times so
    that unigrams get real modified Kneser-Ney discounts too (not the fallback)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_words + 1)
    phrases = [list(rng.choice(n_words, size=3, p=weights / weights.sum()) + 2) for _ in range(8)]
    sentences = []
    for _ in range(n_sentences):
        words = list(rng.choice(n_words, size=rng.integers(1, 9), p=weights / weights.sum()) + 2)
        if rng.random() < 0.4:
            at = int(rng.integers(0, len(words) + 1))
            words[at:at] = phrases[int(rng.integers(0, len(phrases)))]
        sentences.append([int(w) for w in words])
    for word, times in zip(RARE, [1] * 12 + [2] * 6 + [3] * 4 + [4] * 2):
        for s in rng.choice(n_sentences, size=times, replace=False):
            sentences[s].insert(int(rng.integers(0, len(sentences[s]) + 1)), word)
    return sentences


def as_ids(sentences: list[list[int]]) -> np.ndarray:
    return np.array([t for s in sentences for t in [*s, EOS]], dtype=np.int64)


TRAIN = zipf_sentences()


def fitted(smoothing: str, order: int, k: float = 0.5) -> NGramLM:
    return NGramLM.build(as_ids(TRAIN), NGramConfig(vocab_size=VOCAB, order=order, smoothing=smoothing, k=k,
                                                    eos_id=EOS))


def random_contexts(n: int, seed: int = 3) -> list[list[int]]:
    """Histories of 0..6 tokens: seen and unseen words, <unk>, and <eos> (a new sentence) inside."""
    rng = np.random.default_rng(seed)
    contexts = [[]]
    for _ in range(n - 1):
        context = [int(t) for t in rng.integers(0, VOCAB, size=rng.integers(0, 7))]
        contexts.append(context if rng.random() < 0.5 else TRAIN[int(rng.integers(len(TRAIN)))][: len(context)])
    return contexts


# --- the seed example, by hand --------------------------------------------------------------------


def test_mle_bigram_seed_example():
    text = "i am happy\n" * 40 + "i am sad\n" * 10
    tok = WordTokenizer.train(text, eos_per_line=True)
    model = NGramLM.build(tok.encode_array(text), NGramConfig(vocab_size=tok.vocab_size, order=2, smoothing="mle",
                                                              eos_id=tok.special_tokens["<eos>"]))
    i, am, happy, sad = (tok.encode(w)[0] for w in ("i", "am", "happy", "sad"))
    assert math.exp(model.log_prob(happy, [i, am])) == pytest.approx(0.8)
    assert math.exp(model.log_prob(sad, [i, am])) == pytest.approx(0.2)
    assert math.exp(model.log_prob(i)) == pytest.approx(1.0)  # every sentence starts with "i"
    logits, _ = model.step(torch.tensor([tok.encode("i am")]))
    assert logits.softmax(-1)[0, happy].item() == pytest.approx(0.8, abs=1e-6)
    assert model.log_prob(am, [i, am]) == -math.inf  # mle: never seen, probability 0


def test_untrained_model_is_uniform():
    model = NGramLM(NGramConfig(vocab_size=7, order=3))
    logits, _ = model.step(torch.tensor([[1, 2]]))
    torch.testing.assert_close(logits, torch.full((1, 7), -math.log(7)))


# --- distributions --------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("smoothing", list(SMOOTHINGS))
def test_distributions_sum_to_one(smoothing, order):
    model = fitted(smoothing, order)
    for context in random_contexts(12):
        logits, _ = model.step(torch.tensor([context], dtype=torch.long)) if context else model.step(
            torch.zeros(1, 0, dtype=torch.long))
        assert torch.exp(logits.double()).sum().item() == pytest.approx(1.0, abs=1e-5), context
    for context in random_contexts(3, seed=9):  # one probability at a time, through the scoring path
        direct = np.array([model.log_prob(w, context) for w in range(VOCAB)])
        assert np.exp(direct).sum() == pytest.approx(1.0, abs=1e-5)
        logits, _ = model.step(torch.tensor([[EOS, *context]]))  # <eos> first: the context starts a sentence
        np.testing.assert_allclose(np.exp(direct), np.exp(logits[0].double().numpy()), atol=1e-6)


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("smoothing", SMOOTHED)
def test_unseen_words_have_finite_log_probability(smoothing, order):
    model = fitted(smoothing, order)
    for context in ([], [2, 3], [*UNSEEN], [0, 0, 5]):
        for word in (0, *UNSEEN):  # <unk> and two words never seen in training
            assert math.isfinite(model.log_prob(word, context))
    ids = np.array([66, 2, 67, 0, EOS, 67, EOS])
    assert np.isfinite(model.token_log_probs(ids)).all()


@pytest.mark.parametrize("smoothing", SMOOTHED)
@pytest.mark.parametrize("order", [2, 3, 5])
def test_tiny_corpus_falls_back_instead_of_failing(smoothing, order):
    """One sentence: no n-gram occurs twice, so modified Kneser-Ney's count-of-counts are zero."""
    assert mkn_discounts(3, 0, 0, 0) == (0.5, 1.0, 1.5)
    model = NGramLM.build(np.array([2, 3]), NGramConfig(vocab_size=5, order=order, smoothing=smoothing, eos_id=EOS))
    for context in ([], [2], [2, 3], [4, 4]):
        logits, _ = model.step(torch.tensor([[EOS, *context]]))
        assert torch.isfinite(logits).all()
        assert torch.exp(logits.double()).sum().item() == pytest.approx(1.0, abs=1e-6)



@pytest.mark.parametrize("smoothing", list(SMOOTHINGS))
def test_orders_longer_than_every_sentence_still_score(smoothing):
    """No sentence reaches the model's order, so the top tables are empty: scores still come out,
    equal to the step distributions."""
    model = NGramLM.build(np.array([2, EOS, 3, 2, EOS]), NGramConfig(vocab_size=5, order=5, smoothing=smoothing,
                                                                     eos_id=EOS))
    text = np.array([2, 3, EOS, 4, 2])
    scores = model.token_log_probs(text)
    for t in range(len(text)):
        context = text[:t][text[:t].tolist().index(EOS) + 1:] if EOS in text[:t].tolist() else text[:t]
        logits, _ = model.step(torch.tensor([[EOS, *context.tolist()]]))
        assert scores[t] == pytest.approx(torch.log_softmax(logits.double(), -1)[0, text[t]].item(), abs=1e-5)


# --- parity with the formulas, written plainly ----------------------------------------------------


def reference_model(sentences: list[list[int]], order: int, smoothing: str, V: int, k: float = 0.5):
    """P(w | h) straight from the textbook formulas, with dictionaries (Chen & Goodman 1998; KenLM's
    conventions: one <s>, n-grams that begin with <s> keep their raw counts, uniform at the bottom)."""
    bos = V
    counts: Counter = Counter()
    for sentence in sentences:
        padded = [bos, *sentence, EOS]
        for m in range(1, order + 1):
            for i in range(len(padded) - m + 1):
                if padded[i + m - 1] != bos:
                    counts[tuple(padded[i : i + m])] += 1
    left = defaultdict(set)
    for gram in counts:
        if len(gram) > 1:
            left[gram[1:]].add(gram[0])

    def adjusted(gram):
        if smoothing not in ("kn", "mkn") or len(gram) == order or gram[0] == bos:
            return counts[gram]
        return len(left[gram])

    discounts = {}
    for m in range(1, order + 1) if smoothing in ("kn", "mkn") else ():
        n = Counter(min(adjusted(g), 5) for g in counts if len(g) == m)
        n1, n2, n3, n4 = n[1], n[2], n[3], n[4]
        if smoothing == "kn":
            d = n1 / (n1 + 2 * n2) if n1 else 0.5
            discounts[m] = (0.0, d, d, d)
        elif min(n1, n2, n3) == 0:
            discounts[m] = (0.0, 0.5, 1.0, 1.5)  # KenLM's --discount_fallback
        else:
            y = n1 / (n1 + 2 * n2)
            discounts[m] = (0.0, 1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
            if not all(0 < discounts[m][i] <= i for i in (1, 2, 3)):
                discounts[m] = (0.0, 0.5, 1.0, 1.5)
    children = defaultdict(dict)
    for gram in counts:
        children[gram[:-1]][gram[-1]] = adjusted(gram)

    def prob(w, h):
        seen = children.get(h, {})
        if smoothing in ("mle", "add-k"):
            if not seen and h:
                return prob(w, h[1:])
            return (seen.get(w, 0) + k) / (sum(seen.values()) + k * V)
        lower = 1.0 / V if not h else prob(w, h[1:])
        if not seen:
            return lower
        total = sum(seen.values())
        if smoothing == "witten-bell":
            return (seen.get(w, 0) + len(seen) * lower) / (total + len(seen))
        D = discounts[len(h) + 1]
        lam = sum(D[min(a, 3)] for a in seen.values()) / total
        a = seen.get(w, 0)
        return (a - D[min(a, 3)]) / total + lam * lower

    return lambda w, history: prob(w, tuple(([bos] + list(history))[-(order - 1):]) if order > 1 else ())


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("smoothing", SMOOTHED)
def test_matches_the_formulas(smoothing, order):
    model = fitted(smoothing, order)
    reference = reference_model(TRAIN, order, smoothing, VOCAB)
    stream, _ = sentence_stream(as_ids(TRAIN)[None], EOS, VOCAB)
    for a in adjusted_counts(count_ngrams(stream, order, VOCAB + 1)):  # real discounts, not the fallback
        assert mkn_discounts(*count_of_counts(a)) != FALLBACK_DISCOUNTS
    held_out = zipf_sentences(30, seed=7) + [[66, 2, 0, 67, 42]]
    for sentence in held_out:
        ours = model.token_log_probs(as_ids([sentence]))
        theirs = [math.log(reference(w, sentence[:i])) for i, w in enumerate([*sentence, EOS])]
        np.testing.assert_allclose(ours, theirs, atol=2e-5)


# --- the model contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing, order", [("mkn", 1), ("mkn", 4), ("add-k", 3), ("witten-bell", 2)])
def test_forward_matches_step_position_by_position(smoothing, order):
    model = fitted(smoothing, order)
    ids = torch.tensor(as_ids(TRAIN[:6])[:24].reshape(2, 12))
    ids[1, 3] = 67
    full, _ = model(ids)  # (B, T, V)
    state = None
    for t in range(ids.size(1)):
        logits, state = model.step(ids[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0)
    prefilled, prefilled_state = model.step(ids, None)
    torch.testing.assert_close(prefilled, full[:, -1], atol=1e-5, rtol=0)
    assert torch.equal(prefilled_state, state) and state.shape == (2, order - 1)
    _, loss = model(ids[:, :-1], ids[:, 1:])
    scores = np.concatenate([model.token_log_probs(row)[1:] for row in ids.numpy()])
    assert loss.item() == pytest.approx(-scores.mean(), abs=1e-5)


def test_step_left_padding_and_reorder():
    model = fitted("mkn", 3)
    short, long = [5, 6], [EOS, 7, 5, 6]
    padded = torch.tensor([[0, 0, *short], long])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    logits, state = model.step(padded, None, mask=mask)
    alone, _ = model.step(torch.tensor([short]))
    torch.testing.assert_close(logits[0], alone[0])
    swapped = model.reorder(state, torch.tensor([1, 0]))
    after, _ = model.step(torch.tensor([[2], [2]]), swapped)
    expected, _ = model.step(torch.tensor([[2], [2]]), state)
    torch.testing.assert_close(after, expected.flip(0))


def test_state_dict_round_trip_through_safetensors(tmp_path):
    model = fitted("mkn", 3)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = NGramLM(model.config)
    result = fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert not result.missing_keys and not result.unexpected_keys
    ids = as_ids(TRAIN[:20])
    np.testing.assert_array_equal(fresh.token_log_probs(ids), model.token_log_probs(ids))
    assert fresh.num_parameters() == model.num_parameters() > VOCAB
    smaller = NGramLM(NGramConfig(vocab_size=VOCAB - 1, order=3))
    with pytest.raises(RuntimeError, match="log_prob_1"):
        smaller.load_state_dict(model.state_dict())


def test_config_and_inputs_are_checked():
    with pytest.raises(LmlabError, match="unknown NGramConfig option"):
        NGramConfig.from_dict({"vocab_size": 5, "ordr": 3})
    with pytest.raises(LmlabError, match="smoothing must be one of"):
        NGramConfig(vocab_size=5, smoothing="good-turing")
    with pytest.raises(LmlabError, match="k must be a positive number"):
        NGramConfig(vocab_size=5, smoothing="add-k", k=0)
    with pytest.raises(LmlabError, match="eos_id"):
        NGramConfig(vocab_size=5, eos_id=5)
    model = NGramLM(NGramConfig(vocab_size=5, order=2, eos_id=1))
    with pytest.raises(LmlabError, match="out of range"):
        model.fit(np.array([1, 2, 9]))
    with pytest.raises(LmlabError, match="no tokens"):
        model.fit(np.array([], dtype=np.int64))
    assert NGramConfig.from_dict(NGramConfig(vocab_size=5, k=0.1).to_dict()) == NGramConfig(vocab_size=5, k=0.1)


# --- ARPA -----------------------------------------------------------------------------------------

NAMES = ["<unk>", "<eos>"] + [f"w{i}" for i in range(2, VOCAB)]


@pytest.mark.parametrize("suffix", [".arpa", ".arpa.gz"])
@pytest.mark.parametrize("order", [1, 2, 4])
@pytest.mark.parametrize("smoothing", EXPORTABLE)
def test_arpa_round_trip(tmp_path, smoothing, order, suffix):
    model = fitted(smoothing, order)
    path = tmp_path / f"model{suffix}"
    write_arpa(model, path, NAMES)
    loaded, vocab = read_arpa(path)
    assert vocab == NAMES and loaded.order == order and loaded.num_parameters() == model.num_parameters()
    ids = np.concatenate([as_ids(zipf_sentences(20, seed=11)), [66, 0, 67, EOS]])
    np.testing.assert_allclose(loaded.token_log_probs(ids), model.token_log_probs(ids), atol=1e-5)
    context = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(loaded.step(context)[0], model.step(context)[0], atol=1e-5, rtol=0)


def test_arpa_words_may_hold_unicode_spaces(tmp_path):
    """Only space, tab and line ends separate ARPA fields (as in KenLM): French "Va\u202f!" is one word."""
    names = [*NAMES[:5], "Va\u202f!", "a\u00a0b", *NAMES[7:]]
    model = fitted("mkn", 3)
    write_arpa(model, tmp_path / "m.arpa", names)
    loaded, vocab = read_arpa(tmp_path / "m.arpa")
    assert vocab == names
    ids = np.concatenate([as_ids(zipf_sentences(5, seed=3)), [5, 6, EOS]])
    np.testing.assert_allclose(loaded.token_log_probs(ids), model.token_log_probs(ids), atol=1e-5)
    with pytest.raises(LmlabError, match="hold spaces"):
        write_arpa(model, tmp_path / "bad.arpa", [*NAMES[:5], "two words", *NAMES[6:]])


def test_arpa_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(LmlabError, match="cannot hold a add-k model"):
        write_arpa(fitted("add-k", 2), tmp_path / "m.arpa", NAMES)
    with pytest.raises(LmlabError, match="vocabulary has 3 words"):
        write_arpa(fitted("kn", 2), tmp_path / "m.arpa", NAMES[:3])
    (tmp_path / "bad.arpa").write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\ta\n\\end\\\n")
    with pytest.raises(LmlabError, match="does not match its header"):
        read_arpa(tmp_path / "bad.arpa")
    (tmp_path / "bad.arpa").write_text("\\data\\\nngram 1=1\nngram 2=1\n\\1-grams:\n-1\ta\n\\2-grams:\n-1\ta b\n\\end\\\n")
    with pytest.raises(LmlabError, match="'b', which is not a 1-gram"):
        read_arpa(tmp_path / "bad.arpa")


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("smoothing", EXPORTABLE)
def test_kenlm_scores_our_arpa_files_as_we_do(tmp_path, shared_data, smoothing, order):
    kenlm = pytest.importorskip("kenlm")
    lines = (shared_data / "ptb" / "ptb.train.txt").read_text().splitlines()[:2000]
    text = "\n".join(lines) + "\n"
    tok = WordTokenizer.train(text, eos_per_line=True, split_punctuation=False)
    model = NGramLM.build(tok.encode_array(text), NGramConfig(vocab_size=tok.vocab_size, order=order,
                                                              smoothing=smoothing, eos_id=EOS))
    write_arpa(model, tmp_path / "ptb.arpa", tok.vocab)
    oracle = kenlm.Model(str(tmp_path / "ptb.arpa"))
    for line in (shared_data / "ptb" / "ptb.valid.txt").read_text().splitlines()[:150]:  # OOVs included
        ours = model.token_log_probs(tok.encode_array(line + "\n")) / math.log(10)
        theirs = [score for score, _, _ in oracle.full_scores(line, bos=True, eos=True)]
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
        assert ours.sum() == pytest.approx(oracle.score(line, bos=True, eos=True), abs=1e-3)


# --- real data ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ptb_five_gram_modified_kneser_ney_matches_kenlm(shared_data):
    """KenLM's `lmplz -o 5` gets test perplexity 141.19 on PTB (every line a sentence, </s> counted)."""
    train = (shared_data / "ptb" / "ptb.train.txt").read_text()
    test = (shared_data / "ptb" / "ptb.test.txt").read_text()
    tok = WordTokenizer.train(train, eos_per_line=True, split_punctuation=False)
    model = NGramLM.build(tok.encode_array(train), NGramConfig(vocab_size=tok.vocab_size, order=5, eos_id=EOS))
    scores = model.token_log_probs(tok.encode_array(test))
    assert len(scores) == 82430  # 78,669 words + 3,761 </s>
    assert math.exp(-scores.mean()) == pytest.approx(141.19, abs=0.01)
