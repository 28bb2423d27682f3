"""lmlab.data: reading corpora, splits, chunking that never changes tokenization, token files and
the two ways of cutting a token stream into windows."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lmlab.data import (TokenStream, chunk_text, default_corpus_path, read_corpus, split_text, token_dtype,
                        tokenize_to_file)
from lmlab.errors import LmlabError
from lmlab.tokenize import GPT2Tokenizer


@lru_cache(maxsize=1)
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer()


# --- read_corpus ----------------------------------------------------------------------------------


def test_read_corpus_file(tiny_corpus: Path, tiny_text: str):
    assert read_corpus(tiny_corpus) == tiny_text
    assert read_corpus(str(tiny_corpus)) == tiny_text


def test_read_corpus_folder_sorted_and_joined_by_newlines(tmp_path: Path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("third ü", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\xff\xfe")  # not text: skipped
    (tmp_path / ".hidden.txt").write_text("hidden", encoding="utf-8")
    assert read_corpus(tmp_path) == "first\nsecond\nthird ü"


def test_read_corpus_default_is_shipped_shakespeare():
    text = read_corpus(default_corpus_path())
    assert text.startswith("First Citizen:") and len(text) > 1_000_000


@pytest.mark.parametrize("content", [b"", b"  \n\n\t "])
def test_read_corpus_empty_file(tmp_path: Path, content: bytes):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(LmlabError, match="empty"):
        read_corpus(path)


def test_read_corpus_empty_folder(tmp_path: Path):
    with pytest.raises(LmlabError, match="no text files"):
        read_corpus(tmp_path)


def test_read_corpus_missing_path(tmp_path: Path):
    with pytest.raises(LmlabError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")


def test_read_corpus_not_utf8(tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café olé".encode("latin-1"))
    with pytest.raises(LmlabError, match="UTF-8"):
        read_corpus(path)


# --- split_text -----------------------------------------------------------------------------------


def test_split_text_last_ten_percent(tiny_text: str):
    train, val = split_text(tiny_text)
    assert train + val == tiny_text
    assert len(val) == len(tiny_text) - int(len(tiny_text) * 0.9)
    assert split_text(tiny_text) == (train, val)  # deterministic
    assert split_text("0123456789") == ("012345678", "9")
    assert split_text("abcdefghij", 0.3) == ("abcdefg", "hij")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_text_rejects_bad_fraction(fraction: float):
    with pytest.raises(LmlabError, match="val_fraction"):
        split_text("abcdef", fraction)


# --- chunk_text -----------------------------------------------------------------------------------

# Words, spaces, newlines and punctuation, including contractions that the GPT-2 regex treats specially.
PIECES = st.sampled_from(["the", "cat", "a", "I", "Don", "'s", "'t", "'ll", "'", "42", "é", "über", "字", "。",
                          "<|endoftext|>", "<",
                          " ", "  ", "\n", "\n\n", "\t", "\r\n", ".", ",", "!", "?", "--", "\"", "(", ")"])
WORDY_TEXT = st.lists(PIECES, max_size=60).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=WORDY_TEXT, chunk_chars=st.integers(1, 12))
@example(text="ab\n\ncd\nef\ngh", chunk_chars=3)
@example(text="one\ntwo\nthree", chunk_chars=1)
@example(text="don't\n's\n'll\nx", chunk_chars=2)
def test_chunks_concatenate_and_encode_like_the_whole(text: str, chunk_chars: int):
    chunks = list(chunk_text(text, chunk_chars))
    assert "".join(chunks) == text
    assert all(chunks)  # no empty pieces
    whole = gpt2().encode_array(text).tolist()
    parts = [i for chunk in chunks for i in gpt2().encode_array(chunk).tolist()]
    assert parts == whole


def test_chunk_text_cuts_only_between_non_space_neighbours():
    assert list(chunk_text("ab\n\ncd\nef\ngh", 3)) == ["ab\n", "\ncd\n", "ef\ngh"]
    assert list(chunk_text("ab\n\n<|endoftext|>", 1)) == ["ab\n\n<|endoftext|>"]  # a special token may follow
    assert list(chunk_text("a\nb\nc", 1)) == ["a\n", "b\n", "c"]
    assert list(chunk_text("no newline at all", 2)) == ["no", " newline", " at", " all"]
    assert list(chunk_text("a  b \n c", 1)) == ["a  b \n c"]  # every space or newline has a space beside it
    assert list(chunk_text("wiki line . \n = head = \n", 6)) == ["wiki line", " . \n =", " head = \n"]
    assert list(chunk_text("", 4)) == []


def test_chunk_text_cuts_paragraphs_of_text_without_spaces():
    """CJK paragraphs have no spaces and blank lines between them: still cut, so a big corpus is
    never encoded in one piece."""
    text = "\n\n".join("字" * 30 + "。" for _ in range(50))
    chunks = list(chunk_text(text, 100))
    assert len(chunks) > 10 and "".join(chunks) == text
    assert [i for c in chunks for i in gpt2().encode(c)] == gpt2().encode(text)


def test_chunk_text_on_real_text_with_gpt2(tiny_text: str):
    chunks = list(chunk_text(tiny_text, 997))
    assert len(chunks) > 10 and "".join(chunks) == tiny_text
    parts = np.concatenate([gpt2().encode_array(c) for c in chunks])
    assert parts.tolist() == gpt2().encode_array(tiny_text).tolist()


@pytest.mark.parametrize("name", ["wikitext-2/valid.txt", "tinyshakespeare/input.txt"])
def test_chunk_text_on_shared_corpora_with_gpt2(shared_data: Path, name: str):
    if not (shared_data / name).is_file():
        pytest.skip(f"{name} not in {shared_data}")
    text = read_corpus(shared_data / name)[:300_000]
    chunks = list(chunk_text(text, 20_000))
    assert "".join(chunks) == text
    # (WikiText ends every line with " \n": no lone newline between two non-spaces, so one chunk.)
    parts = np.concatenate([gpt2().encode_array(c) for c in chunks])
    assert np.array_equal(parts, gpt2().encode_array(text))


def test_packaged_corpus_is_the_shared_tiny_shakespeare(shared_data: Path):
    shared = shared_data / "tinyshakespeare" / "input.txt"
    if not shared.is_file():
        pytest.skip(f"{shared} is missing")
    assert default_corpus_path().read_bytes() == shared.read_bytes()


# --- token files ----------------------------------------------------------------------------------


def test_token_dtype_by_vocab_size():
    assert token_dtype(100) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
    assert token_dtype(50257) == np.uint16


def test_tokenize_to_file_round_trip(tmp_path: Path, tiny_text: str):
    alphabet = sorted(set(tiny_text))
    index = {c: i for i, c in enumerate(alphabet)}

    def encode_array(text: str) -> np.ndarray:
        return np.asarray([index[c] for c in text], dtype=np.uint32)

    path = tmp_path / "cache" / "train.bin"
    stream = tokenize_to_file(tiny_text, encode_array, len(alphabet), path)
    assert path.stat().st_size == 2 * len(tiny_text)  # uint16 on disk
    reopened = TokenStream.open(path)
    for s in (stream, reopened):
        assert isinstance(s.tokens, np.memmap)
        assert s.tokens.dtype == np.uint16
        assert len(s) == len(tiny_text)
        assert "".join(alphabet[i] for i in s.tokens) == tiny_text
    assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no temporaries


def test_tokenize_to_file_large_vocab_and_empty_text(tmp_path: Path):
    stream = tokenize_to_file("abc", lambda t: np.asarray([70_000, 1, 2], dtype=np.uint32)[: len(t)], 70_001,
                              tmp_path / "big.bin")
    assert stream.tokens.dtype == np.uint32 and stream.tokens.tolist() == [70_000, 1, 2]
    empty = tokenize_to_file("", lambda t: np.zeros(0, dtype=np.uint32), 10, tmp_path / "empty.bin")
    assert len(empty) == 0 and len(TokenStream.open(tmp_path / "empty.bin")) == 0


def test_tokenize_to_file_with_gpt2(tmp_path: Path, tiny_text: str):
    tok = gpt2()
    stream = tokenize_to_file(tiny_text, tok.encode_array, tok.vocab_size, tmp_path / "gpt2.bin")
    assert stream.tokens.dtype == np.uint16
    assert stream.tokens.tolist() == tok.encode(tiny_text)


# --- windows --------------------------------------------------------------------------------------


def test_random_windows_shapes_shift_and_determinism():
    stream = TokenStream.from_ids(np.arange(100) * 3)
    x, y = stream.random_windows(5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(y - x, torch.full_like(x, 3))  # consecutive tokens of the stream
    assert torch.all(x % 3 == 0) and x.min() >= 0 and y.max() <= 297
    again = stream.random_windows(5, 8, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    other = stream.random_windows(5, 8, torch.Generator().manual_seed(1))
    assert not torch.equal(other[0], x)


def test_random_windows_reach_both_ends():
    stream = TokenStream.from_ids(np.arange(10))
    g = torch.Generator().manual_seed(0)
    starts = {int(stream.random_windows(4, 3, g)[0][i, 0]) for _ in range(100) for i in range(4)}
    assert starts == set(range(7))  # every start whose window and target fit


def test_random_windows_too_short():
    with pytest.raises(LmlabError, match="context_len"):
        TokenStream.from_ids(np.arange(8)).random_windows(2, 8, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("n_tokens", [1, 2, 9, 17, 33, 34, 50])
@pytest.mark.parametrize("context_len, batch_size", [(8, 3), (4, 1), (16, 2)])
def test_windows_cover_every_token_after_the_first_once(n_tokens: int, context_len: int, batch_size: int):
    stream = TokenStream.from_ids(np.arange(n_tokens) + 100)
    inputs, targets = [], []
    for x, y in stream.windows(context_len, batch_size):
        assert x.shape == y.shape and x.dim() == 2
        assert x.shape[0] <= batch_size and 1 <= x.shape[1] <= context_len
        assert torch.equal(x[:, 1:], y[:, :-1])
        inputs += x.flatten().tolist()
        targets += y.flatten().tolist()
    assert targets == list(range(101, 100 + n_tokens))  # in order, each once
    assert inputs == list(range(100, 99 + n_tokens))


def test_windows_on_memmapped_stream(tmp_path: Path):
    ids = np.arange(40) % 7
    stream = tokenize_to_file("x" * 40, lambda t: ids[: len(t)], 7, tmp_path / "t.bin")
    targets = [t for _, y in stream.windows(6, 4) for t in y.flatten().tolist()]
    assert targets == ids[1:].tolist()


def test_read_corpus_drops_byte_order_marks_and_skips_hidden_folders(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbffirst")
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfsecond")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "index").write_bytes(b"DIRC\x00\x00\x00\x02\xff")  # not text: must not be read
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("a copy")
    assert read_corpus(tmp_path) == "first\nsecond"


def test_word_tokenizer_counts_without_a_list_of_every_word():
    from lmlab.tokenize import WordTokenizer

    text = "The cat (<unk>) sat.\nthe CAT sat\n"
    tok = WordTokenizer.train(text, lowercase=True)
    assert list(tok.words(text)) == tok.split(text)
    assert tok.vocab[0] == "<unk>" and {"cat", "sat", "the"} <= set(tok.vocab)
