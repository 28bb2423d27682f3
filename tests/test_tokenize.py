"""Tokenizers: the contract every family keeps, round trips, hand-checked answers, and GPT-2 ids
checked against tiktoken (built offline from the same vocabulary files tiktoken pins)."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lmlab.errors import LmlabError
from lmlab.tokenize import (
    TOKENIZERS,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    load,
)
from lmlab.tokenize.bpe import bytes_to_unicode, split_for_encoding
from lmlab.tokenize.word import SPLIT_VERSION

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GPT2_ASSETS = resources.files("lmlab") / "assets" / "gpt2"
SHAKESPEARE = (resources.files("lmlab") / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")
TRAIN_TEXT = SHAKESPEARE[:200_000]
# Text no tokenizer was trained on: other scripts, emoji, combining marks, controls, odd spaces,
# special-token spellings, a lone surrogate (no UTF-8 form), and the empty string.
UNUSUAL = [
    "",
    "naïve café — 東京 🤗👩‍👩‍👧 e\u0301",
    "\x00\x1b[31m\t\r\n\x0b\x0c\u2028\xa0\u3000  ",
    "<unk> <eos> <|endoftext|> <|startoftext|>",
    "x\ud800y",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
]
# Characters that stress the GPT-2 pre-tokenization regex: whitespace runs, contractions, digits.
TRICKY = st.sampled_from([" ", "  ", "\n", "\t", "\r\n", "\xa0", "\u3000", "'s", "'ll", "'", "s", "a", "1", "é", "!", "🤗"])
TEXT = st.lists(st.one_of(TRICKY, st.characters())).map("".join)  # may hold lone surrogates
WHITESPACE_HEAVY_TEXT = st.lists(st.sampled_from([" ", "\n", "\t", "\r", "\xa0", "a", "!", "1", "'s"])).map("".join)
UTF8_TEXT = st.lists(st.one_of(TRICKY, st.characters(codec="utf-8"))).map("".join)
# Hashes tiktoken pins for the GPT-2 files (tiktoken_ext/openai_public.py).
TIKTOKEN_GPT2_SHA256 = {
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


@lru_cache(maxsize=None)
def trained(kind: str) -> Tokenizer:
    options = {"bpe": {"vocab_size": 1024}}.get(kind, {})
    return build_tokenizer(kind, None if kind == "gpt2" else TRAIN_TEXT, **options)


@lru_cache(maxsize=1)
def tiktoken_gpt2():
    """tiktoken's own "gpt2" encoding, read from the shipped files instead of downloaded."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    with pytest.MonkeyPatch.context() as patch, resources.as_file(GPT2_ASSETS) as assets:
        patch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache writes
        ranks = data_gym_to_mergeable_bpe_ranks(str(assets / "merges.txt"), str(assets / "vocab.json"))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})


@pytest.fixture(scope="module", params=TOKENIZERS)
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    return trained(request.param)


# --- the contract, for every family -------------------------------------------------------------


def test_save_load_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    back = load(path)
    assert type(back) is type(tok)
    assert (back.vocab_size, back.special_tokens, back.eot_id) == (tok.vocab_size, tok.special_tokens, tok.eot_id)
    for text in [SHAKESPEARE[-5000:], *UNUSUAL]:
        assert back.encode(text) == tok.encode(text)
    assert build_tokenizer(str(path)).encode(SHAKESPEARE[:500]) == tok.encode(SHAKESPEARE[:500])
    assert build_tokenizer(str(tmp_path)).vocab_size == tok.vocab_size  # a directory with tokenizer.json


def test_every_id_below_vocab_size_decodes_and_no_other(tok: Tokenizer) -> None:
    ids = tok.encode_array(SHAKESPEARE + "".join(UNUSUAL))
    assert ids.max() < tok.vocab_size
    assert isinstance(tok.decode(range(tok.vocab_size)), str)
    assert all(isinstance(tok.id_to_token(i), str) for i in (0, tok.vocab_size - 1))
    for bad in (tok.vocab_size, -1):
        with pytest.raises(LmlabError, match="out of range"):
            tok.decode([bad])
    for token, token_id in tok.special_tokens.items():
        assert 0 <= token_id < tok.vocab_size
    assert tok.eot_id is None or tok.eot_id in tok.special_tokens.values()


@pytest.mark.parametrize("text", UNUSUAL)
def test_unusual_input_never_crashes(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.encode_array(text).tolist() == ids
    assert isinstance(tok.decode(ids), str)


def test_encode_array_matches_encode(tok: Tokenizer) -> None:
    text = "\n\n".join([SHAKESPEARE[-300_000:], *UNUSUAL, SHAKESPEARE[:1000]])
    array = tok.encode_array(text)
    assert array.dtype == np.uint32
    assert array.tolist() == tok.encode(text)


def test_decode_bytes_agrees_with_decode(tok: Tokenizer) -> None:
    ids = tok.encode(SHAKESPEARE[:2000] + UNUSUAL[1])
    assert tok.decode_bytes(ids).decode("utf-8", errors="replace") == tok.decode(ids)


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bpe", "gpt2"])
@settings(deadline=None)
@given(text=UTF8_TEXT)
def test_byte_level_round_trip(kind: str, text: str) -> None:
    tok = trained(kind)
    assert tok.decode(tok.encode(text)) == text
    assert b"".join(tok.decode_bytes([i]) for i in tok.encode(text)) == text.encode("utf-8")


@settings(deadline=None)
@given(text=st.text(st.sampled_from(sorted(set(TRAIN_TEXT)))))
def test_char_round_trip(text: str) -> None:
    tok = trained("char")
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("kind", ["bpe", "gpt2"])
@settings(deadline=None)
@given(text=st.one_of(TEXT, WHITESPACE_HEAVY_TEXT))
@example(text="a\n\n!")  # a cut after "\n\n" would merge it into one token
def test_encoding_parts_equals_encoding_whole(kind: str, text: str) -> None:
    tok = trained(kind)
    whole = tok.encode(text)
    for target_chars in range(1, len(text) + 1):  # every place a cut can be looked for
        parts = split_for_encoding(text, target_chars)
        assert "".join(parts) == text
        assert sum((tok.encode(part) for part in parts), []) == whole, parts


# --- GPT-2: parity with tiktoken ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TIKTOKEN_GPT2_SHA256))
def test_gpt2_files_are_the_ones_tiktoken_pins(name: str) -> None:
    assert hashlib.sha256((GPT2_ASSETS / name).read_bytes()).hexdigest() == TIKTOKEN_GPT2_SHA256[name]


def test_gpt2_known_ids() -> None:
    tok = trained("gpt2")
    assert (tok.vocab_size, tok.eot_id, tok.special_tokens) == (50257, 50256, {"<|endoftext|>": 50256})
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("a<|endoftext|>b") == [64, 50256, 65]
    assert tok.id_to_token(262) == "Ġthe"


@settings(deadline=None, max_examples=300)
@given(text=TEXT)
def test_gpt2_matches_tiktoken_on_any_text(text: str) -> None:
    assert trained("gpt2").encode(text) == tiktoken_gpt2().encode(text, allowed_special="all")


def test_gpt2_matches_tiktoken_on_lone_surrogates() -> None:
    for text in ["x\ud800y", "\udfff", "\ud83d\ude00 ok"]:
        assert trained("gpt2").encode(text) == tiktoken_gpt2().encode(text)


def _shared_corpora() -> list:
    files = ["tinyshakespeare/input.txt", "wikitext-2/valid.txt", "ptb/ptb.valid.txt", "multi30k/val.de"]
    files += sorted(str(p.relative_to(SHARED_DATA)) for p in SHARED_DATA.glob("gutenberg/*.txt"))
    if not (SHARED_DATA / files[0]).is_file():
        return [pytest.param("", marks=pytest.mark.skip(reason=f"shared corpora not found at {SHARED_DATA}"))]
    return files


@pytest.mark.parametrize("name", _shared_corpora())
def test_gpt2_matches_tiktoken_on_shared_corpora(name: str) -> None:
    text = (SHARED_DATA / name).read_text(encoding="utf-8", errors="replace")[:200_000]
    assert trained("gpt2").encode_array(text).tolist() == tiktoken_gpt2().encode(text, allowed_special="all")


# --- byte-level BPE -------------------------------------------------------------------------------


def test_bytes_to_unicode_is_a_bijection_onto_the_hf_alphabet() -> None:
    from tokenizers.pre_tokenizers import ByteLevel

    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert sorted(table.values()) == sorted(ByteLevel.alphabet())


def test_bpe_decode_matches_hugging_face() -> None:
    tok = trained("bpe")
    assert isinstance(tok, BPETokenizer)
    ids = tok.encode(SHAKESPEARE[-3000:] + UNUSUAL[1])
    assert tok.decode(ids) == tok.hf_tokenizer.decode(ids, skip_special_tokens=False)


def test_bpe_special_tokens_come_first_and_are_kept_whole() -> None:
    tok = BPETokenizer.train("ab<|endoftext|>ab<|pad|>" * 50, vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"])
    assert tok.special_tokens == {"<|endoftext|>": 0, "<|pad|>": 1} and tok.eot_id == 0
    assert tok.encode("ab<|pad|>") == [tok.encode("ab")[0], 1]
    learned = [tok.decode([i]) for i in range(tok.vocab_size) if i > 1]
    assert not any("<|" in token for token in learned)


def test_bpe_vocab_size_too_small() -> None:
    with pytest.raises(LmlabError, match="at least 256"):
        BPETokenizer.train("hello", vocab_size=100)


# --- word -----------------------------------------------------------------------------------------


def word_split(text: str, **options) -> list[str]:
    """How the default word tokenizer splits `text`."""
    return WordTokenizer(["<unk>"], **options).split(text)


def test_word_vocab_is_specials_then_frequency_then_alphabet() -> None:
    tok = WordTokenizer.train("Hello, world! Hello again.")
    assert tok.vocab == ["<unk>", "Hello", "!", ",", ".", "again", "world"]
    assert tok.encode("Hello, moon!") == [1, 3, 0, 2]
    assert tok.decode([1, 3, 0, 2]) == "Hello , <unk> !"
    assert tok.eot_id is None and tok.special_tokens == {"<unk>": 0}


def test_word_lowercase() -> None:
    tok = WordTokenizer.train("The cat. THE dog.", lowercase=True)
    assert tok.vocab == ["<unk>", ".", "the", "cat", "dog"]
    assert tok.encode("THE Cat") == [2, 3]
    assert tok.split("Mr. X <UNK>") == ["mr.", "x", "<unk>"]  # split first, then lowercased


def test_word_lowercase_comes_after_the_split_so_a_capital_still_ends_a_sentence() -> None:
    """A lowercase word after a period means the sentence goes on ("approx. ten"); rule 1 lowercased
    the text first, which rule 2 must not do, or every "home. Then" would keep its period."""
    assert word_split("home. Then approx. ten", lowercase=True) == ["home", ".", "then", "approx.", "ten"]
    assert word_split("The cat. the dog.", lowercase=True, split_version=1) == ["the", "cat", ".", "the", "dog", "."]


def test_word_min_freq_and_max_vocab() -> None:
    text = "a a b b b c"
    assert WordTokenizer.train(text, min_freq=2).vocab == ["<unk>", "b", "a"]
    assert WordTokenizer.train(text, max_vocab=3).vocab == ["<unk>", "b", "a"]
    assert WordTokenizer.train(text, max_vocab=3, eos_per_line=True).vocab == ["<unk>", "<eos>", "b"]
    assert WordTokenizer.train(text, min_freq=2).encode("c a") == [0, 2]
    with pytest.raises(LmlabError, match="min_freq"):
        WordTokenizer.train(text, min_freq=0)
    with pytest.raises(LmlabError, match="max_vocab"):
        WordTokenizer.train(text, max_vocab=1)


def test_word_punctuation_split_or_not() -> None:
    assert WordTokenizer.train("don't stop.").vocab == ["<unk>", ".", "don't", "stop"]
    assert WordTokenizer.train("don't stop.", split_punctuation=False).vocab == ["<unk>", "don't", "stop."]


def test_word_ordinary_punctuation_is_split_off() -> None:
    assert word_split("Hello, world!") == ["Hello", ",", "world", "!"]
    assert word_split("(yes); no: [maybe]?!") == ["(", "yes", ")", ";", "no", ":", "[", "maybe", "]", "?", "!"]
    assert word_split("Wait... no--never — ever.") == ["Wait", "...", "no", "--", "never", "—", "ever", "."]
    assert word_split("He was ill. She said no.\nThe end.") == ["He", "was", "ill", ".", "She", "said", "no", ".", "The", "end", "."]
    assert word_split("It rose 3.5. Then 1,000 fell.") == ["It", "rose", "3.5", ".", "Then", "1,000", "fell", "."]


@pytest.mark.parametrize("word", ["don't", "can't", "rock'n'roll", "O'Brien", "y'all", "O'Brien's", "ne'er"])
def test_word_apostrophes_inside_words_stay(word: str) -> None:
    assert word_split(f"{word} {word.upper()}, {word}.") == [word, word.upper(), ",", word, "."]


@pytest.mark.parametrize("clitic", ["n't", "'s", "'re", "'ve", "'m", "'ll", "'d", "'t"])
def test_word_clitics_already_split_off_stay_whole(clitic: str) -> None:
    """PTB writes "does n't", "it 's" (WikiText "don 't"): the clitic is one token, not "' s"."""
    assert word_split(f"it {clitic} here") == ["it", clitic, "here"]
    assert word_split(f"IT {clitic.upper()}, it {clitic}.") == ["IT", clitic.upper(), ",", "it", clitic, "."]


def test_word_quotes_and_plural_possessives_are_split_off() -> None:
    """An apostrophe at a word's edge is a quotation mark, or a plural's possessive, which PTB also
    writes as a token of its own ("the dogs ' owner")."""
    assert word_split("'hello'") == ["'", "hello", "'"]
    assert word_split("She said 'hello'.") == ["She", "said", "'", "hello", "'", "."]
    assert word_split("'sorry,' he said") == ["'", "sorry", ",", "'", "he", "said"]
    assert word_split("the dogs' bowls and James' car") == ["the", "dogs", "'", "bowls", "and", "James", "'", "car"]
    assert word_split('"Yes," he said.') == ['"', "Yes", ",", '"', "he", "said", "."]
    assert word_split("\u2018Yes,\u2019 \u201cno\u201d") == ["\u2018", "Yes", ",", "\u2019", "\u201c", "no", "\u201d"]


@pytest.mark.parametrize("text", [
    "don't stop rock'n'roll", "O'Brien's dog", "it 's here", "does n't", "'hello'", "the dogs' bowls",
    "'sorry,' she said", "'80s",
])
def test_word_typographic_apostrophes_work_like_ascii(text: str) -> None:
    assert word_split(text.replace("'", "\u2019")) == [token.replace("'", "\u2019") for token in word_split(text)]


def test_word_abbreviations_keep_their_period_and_a_sentence_end_does_not() -> None:
    assert word_split("Mr. J. Smith of Acme Inc., the U.S. unit.") == [
        "Mr.", "J.", "Smith", "of", "Acme", "Inc.", ",", "the", "U.S.", "unit", "."]
    assert word_split("At 5 p.m. on Oct. 3, e.g. approx. ten.") == [
        "At", "5", "p.m.", "on", "Oct.", "3", ",", "e.g.", "approx.", "ten", "."]
    assert word_split("Dr. Who met St. John in Calif. Then I left. Than I.") == [
        "Dr.", "Who", "met", "St.", "John", "in", "Calif.", "Then", "I", "left", ".", "Than", "I", "."]
    assert word_split("A. Lincoln wrote a.\nOf a. lincoln") == ["A.", "Lincoln", "wrote", "a", ".", "Of", "a.", "lincoln"]
    assert word_split("Warner Bros. Pictures; AT&T and/or R&D; state-of-the-art; www.example.com.") == [
        "Warner", "Bros.", "Pictures", ";", "AT&T", "and/or", "R&D", ";", "state-of-the-art", ";", "www.example.com", "."]


def test_word_pretokenized_marks_stay_whole() -> None:
    """WikiText writes a hyphen, comma or period inside a number or compound as @-@, @,@, @.@; PTB
    escapes * and / as \\* and \\/; PTB writes currencies us$, c$ and years '80s."""
    assert word_split("1 @,@ 000 state @-@ of 3 @.@ 5") == ["1", "@,@", "000", "state", "@-@", "of", "3", "@.@", "5"]
    assert word_split("\\* \\*\\* mgm\\/ua 1\\/2-year us$ N c$ the '80s") == [
        "\\*", "\\*\\*", "mgm\\/ua", "1\\/2-year", "us$", "N", "c$", "the", "'80s"]


def _lines_with_line_ends(text: str) -> list[str]:
    return [token for line in text.splitlines(keepends=True) for token in [*line.split(), "\n"]]


def test_word_default_split_of_ptb_is_ptb_own_tokens(shared_data: Path) -> None:
    """PTB is already tokenized (n't, 's, mr., u.s., third-quarter, s&p, c$, \\*): the default split
    must give exactly its words plus one <eos> per line, 82,430 test tokens as in the literature."""
    text = (shared_data / "ptb" / "ptb.test.txt").read_text(encoding="utf-8")
    tok = WordTokenizer(["<unk>", "<eos>"], eos_per_line=True)
    lines = text.splitlines(keepends=True)
    for line in [lines[0], *(line for line in lines if "n't" in line or "'s" in line or "." in line)][::40]:
        assert tok.split(line) == [*line.split(), "\n"], line
    tokens = tok.split(text)
    assert tokens == _lines_with_line_ends(text) and len(tokens) == 78_669 + 3_761 == 82_430


def test_word_default_split_of_wikitext_keeps_its_tokens_but_quotes(shared_data: Path) -> None:
    """WikiText-2 is tokenized too. Its tokens stay whole, but for what a reader's text could not tell
    from a quotation or a sentence end: an apostrophe before a word that is no clitic (K 'awiil,
    O 'Neil), a hyphen ending a word (18- to 49) and the initial "I."."""
    text = (shared_data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    tok = WordTokenizer(["<unk>", "<eos>"], eos_per_line=True)
    cut = {word for line in text.splitlines() for word in Counter(line.split()) - Counter(tok.split(line))}
    assert cut and all(word[0] in "'\u2019" or word.endswith("-") or word == "I." for word in cut), sorted(cut)


def test_word_eos_per_line() -> None:
    tok = WordTokenizer.train("a b\n\nb\n", eos_per_line=True)
    assert tok.vocab == ["<unk>", "<eos>", "b", "a"]
    assert tok.encode("a b\n\nb\n") == [3, 2, 1, 1, 2, 1]
    assert tok.decode([3, 2, 1, 1, 2, 1]) == "a b\n\nb\n"
    assert tok.encode("a b") == [3, 2]  # a last line without a newline has no <eos>
    assert tok.id_to_token(1) == "<eos>" and tok.eot_id is None


def test_word_special_tokens_in_text_map_to_their_ids() -> None:
    tok = WordTokenizer.train("the <unk> fell .\n", eos_per_line=True)
    assert "<unk>" not in tok.vocab[2:]
    assert tok.encode("the <unk> <eos>") == [tok.vocab.index("the"), 0, 1]


def test_word_special_tokens_right_after_punctuation_stay_whole(tmp_path: Path) -> None:
    tok = WordTokenizer.train("(a) end.\n", eos_per_line=True)
    assert tok.split("(<unk>) end.<eos>--<unk>") == ["(", "<unk>", ")", "end", ".", "<eos>", "--", "<unk>"]
    assert tok.encode("(<unk>)") == [tok.vocab.index("("), 0, tok.vocab.index(")")]


def test_word_lone_surrogates_stay_unknown_and_the_tokenizer_saves(tmp_path: Path) -> None:
    tok = WordTokenizer.train("a \ud800 b\n")
    assert "\ud800" not in tok.vocab and tok.encode("\ud800") == [0]
    tok.save(tmp_path / "tok.json")
    assert load(tmp_path / "tok.json").vocab == tok.vocab


# The word tokenizer's pattern before split_version existed (rule 1), for its two sets of special tokens.
RULE_1 = {False: re.compile(r"<unk>|\w+|(?:(?!<unk>)[^\w\s])+"),
          True: re.compile(r"\n|<unk>|<eos>|\w+|(?:(?!<unk>)(?!<eos>)[^\w\s])+")}


@pytest.mark.parametrize("eos_per_line", [False, True])
@pytest.mark.parametrize("lowercase", [False, True])
def test_word_file_saved_before_split_version_splits_as_it_did(tmp_path: Path, lowercase: bool, eos_per_line: bool) -> None:
    """A tokenizer.json from before rule 2 (no "split_version") must split exactly as it did then,
    so that a run's token cache and its perplexity keep their meaning."""
    path = tmp_path / "tokenizer.json"
    vocab = ["<unk>", "<eos>"][: 1 + eos_per_line] + ["don", "'", "t", "the"]
    path.write_text(json.dumps({"format_version": 1, "kind": "word", "lowercase": lowercase, "split_punctuation": True,
                                "eos_per_line": eos_per_line, "vocab": vocab}))
    tok = load(path)
    assert tok.split_version == 1 and tok.split("Don't!") == ["don" if lowercase else "Don", "'", "t", "!"]
    for text in [SHAKESPEARE[:50_000], *UNUSUAL, "İstanbul <UNK> (<unk>)--<eos>!"]:
        assert tok.split(text) == RULE_1[eos_per_line].findall(text.lower() if lowercase else text)
    tok.save(path)  # re-saving keeps rule 1
    assert json.loads(path.read_text())["split_version"] == 1 and load(path).split(SHAKESPEARE[:5000]) == tok.split(SHAKESPEARE[:5000])


def test_word_new_file_records_its_split_and_round_trips(tmp_path: Path) -> None:
    tok = WordTokenizer.train("Don't stop, Mr. Smith.\nit 's here\n", eos_per_line=True)
    assert tok.to_dict()["split_version"] == SPLIT_VERSION == 2
    tok.save(tmp_path / "tok.json")
    back = load(tmp_path / "tok.json")
    assert back.split_version == 2 and back.to_dict() == tok.to_dict()
    for text in [SHAKESPEARE[:50_000], *UNUSUAL]:
        assert back.split(text) == tok.split(text)
    with pytest.raises(LmlabError, match="split_version must be one of \\[1, 2\\], got 3.*upgrade"):
        WordTokenizer.from_dict({**tok.to_dict(), "split_version": 3})


# Text rich in what the word split decides on: marks, apostrophes, periods, clitics, capitals, numbers.
WORDY_TEXT = st.lists(st.one_of(st.sampled_from(
    [" ", "\n", "a", "B", "I", "N", "1", ".", ",", ";", "'", "\u2019", "s", "t", "-", "&", "/", "\\", "*", "@", "$",
     "Mr", "inc", "<unk>", "<eos>", "é", "İ", "_"]), st.characters()), max_size=40).map("".join)


@lru_cache(maxsize=None)
def word_tokenizer(split_version: int, lowercase: bool) -> WordTokenizer:
    vocab = WordTokenizer.train(TRAIN_TEXT[:20_000] + " a B I N 1 s t Mr inc Mr. inc. a. B. N. 1. 's 't \\* ...",
                                lowercase=lowercase, eos_per_line=True).vocab
    return WordTokenizer(vocab, lowercase=lowercase, eos_per_line=True, split_version=split_version)


@pytest.mark.parametrize("split_version", [1, 2])
@pytest.mark.parametrize("lowercase", [False, True])
@settings(deadline=None)
@given(text=st.one_of(TEXT, WORDY_TEXT))
def test_word_decoding_then_encoding_gives_the_same_ids(split_version: int, lowercase: bool, text: str) -> None:
    """Decoding is lossy (single spaces between tokens), but splitting what it gives finds the same tokens."""
    tok = word_tokenizer(split_version, lowercase)
    ids = tok.encode(text)
    assert tok.encode(tok.decode(ids)) == ids
    assert tok.decode(tok.encode(tok.decode(ids))) == tok.decode(ids)
    assert list(tok.words(text)) == tok.split(text) and tok.encode_array(text).tolist() == ids


@pytest.mark.parametrize("specials", [["", "<|endoftext|>"], ["<a>", "<a>"], [None]])
def test_bpe_special_tokens_must_be_distinct_non_empty_strings(specials) -> None:
    with pytest.raises(LmlabError, match="special_tokens"):
        BPETokenizer.train("some text " * 20, vocab_size=300, special_tokens=specials)


def test_word_ptb_vocabulary_is_the_standard_10k() -> None:
    path = SHARED_DATA / "ptb" / "ptb.train.txt"
    if not path.is_file():
        pytest.skip(f"PTB not found at {path}")
    text = path.read_text(encoding="utf-8")
    tok = WordTokenizer.train(text, split_punctuation=False, eos_per_line=True)
    assert tok.vocab_size == 10_000
    assert len(tok.encode_array(text)) == 887_521 + 42_068  # words + one <eos> per sentence


# --- char -----------------------------------------------------------------------------------------


def test_char_ids_are_sorted_characters_then_unk() -> None:
    tok = CharTokenizer.train(SHAKESPEARE)
    assert tok.vocab_size == 66  # nanoGPT's shakespeare_char has 65 characters; <unk> is id 65
    assert tok.encode("\n !") == [0, 1, 2]
    assert tok.encode("é") == [65] and tok.decode([65]) == "\ufffd" and tok.id_to_token(65) == "<unk>"


def test_char_encode_array_matches_encode_on_big_text() -> None:
    tok = trained("char")
    text = SHAKESPEARE * 3 + "".join(UNUSUAL)
    assert tok.encode_array(text).tolist() == tok.encode(text)


# --- files and the factory ------------------------------------------------------------------------


def test_newer_format_version_asks_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    trained("char").save(path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(LmlabError, match="upgrade"):
        load(path)


@pytest.mark.parametrize("kind", TOKENIZERS)
def test_unknown_keys_in_file_are_rejected(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    trained(kind).save(path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "colour": "blue"}))
    with pytest.raises(LmlabError, match="colour"):
        load(path)


def test_build_tokenizer_errors() -> None:
    with pytest.raises(LmlabError, match="pass the training text"):
        build_tokenizer("bpe")
    with pytest.raises(LmlabError, match="pass the training text"):
        build_tokenizer("char", "")
    with pytest.raises(LmlabError, match="char, word, bpe, gpt2"):
        build_tokenizer("sentencepiece", "some text")
    with pytest.raises(LmlabError, match="unknown option.*vocab_sise.*accepted: vocab_size"):
        build_tokenizer("bpe", "some text", vocab_sise=300)
    with pytest.raises(LmlabError, match="no options"):
        build_tokenizer("gpt2", vocab_size=300)
    with pytest.raises(LmlabError, match="does not exist"):
        build_tokenizer("missing/tokenizer.json")


def test_build_tokenizer_passes_options() -> None:
    tok = build_tokenizer("word", "A a b", lowercase=True, eos_per_line=True)
    assert isinstance(tok, WordTokenizer) and tok.vocab == ["<unk>", "<eos>", "a", "b"]
    assert isinstance(build_tokenizer("gpt2"), GPT2Tokenizer)
