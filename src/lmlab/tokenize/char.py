"""Character-level tokenizer: one id per Unicode character seen in the training text.

Ids are the positions of the characters in the sorted character set (the convention of char-rnn
and nanoGPT's shakespeare_char), followed by one `<unk>` id for every character the training text
did not contain. Word and byte-level BPE tokenizers live in word.py and bpe.py.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lmlab.errors import LmlabError
from lmlab.tokenize.base import Tokenizer

UNK = "<unk>"
UNK_TEXT = "\ufffd"  # what an unknown character decodes to
_N_CODE_POINTS = 0x110000
_CHUNK_CHARS = 1 << 22  # encode_array converts text to code points this many characters at a time


def _is_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udfff"


class CharTokenizer(Tokenizer):
    """Characters <-> ids; characters outside the vocabulary become `<unk>` (decoded as U+FFFD).

    >>> tok = CharTokenizer.train("hello")
    >>> tok.chars, tok.vocab_size
    ('ehlo', 5)
    >>> tok.encode("hole!")
    [1, 3, 2, 0, 4]
    >>> tok.decode([1, 3, 2, 0, 4])
    'hole\\ufffd'
    """

    kind = "char"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or any(_is_surrogate(c) for c in chars):
            raise LmlabError("char tokenizer: the characters must be distinct and valid; retrain it with CharTokenizer.train")
        self.chars = chars
        self.unk_id = len(chars)
        self._index = {char: i for i, char in enumerate(chars)}
        self._pieces = [*chars, UNK_TEXT]
        self._table: np.ndarray | None = None  # code point -> id, built on first encode_array

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        """The vocabulary is the sorted set of characters of `text` (lone surrogates excluded)."""
        return cls("".join(sorted(c for c in set(text) if not _is_surrogate(c))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def special_tokens(self) -> dict[str, int]:
        return {UNK: self.unk_id}

    def encode(self, text: str) -> list[int]:
        index, unk = self._index, self.unk_id
        return [index.get(char, unk) for char in text]

    def encode_array(self, text: str) -> np.ndarray:
        """Vectorised `encode`: code points through a lookup table, a few chunks at a time."""
        table = self._lookup_table()
        out = np.empty(len(text), dtype=np.uint32)
        for start in range(0, len(text), _CHUNK_CHARS):
            chunk = text[start : start + _CHUNK_CHARS].encode("utf-32-le", "surrogatepass")
            out[start : start + _CHUNK_CHARS] = table[np.frombuffer(chunk, dtype=np.uint32)]
        return out

    def _lookup_table(self) -> np.ndarray:
        if self._table is None:
            table = np.full(_N_CODE_POINTS, self.unk_id, dtype=np.uint32)
            table[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.uint32)
            self._table = table
        return self._table

    def decode(self, ids: Sequence[int]) -> str:
        pieces, size = self._pieces, self.vocab_size
        out = []
        for token_id in ids:
            if not 0 <= token_id < size:
                raise LmlabError(f"token id {token_id} is out of range for this char tokenizer (vocab size {size})")
            out.append(pieces[token_id])
        return "".join(out)

    def id_to_token(self, token_id: int) -> str:
        return UNK if token_id == self.unk_id else self.decode([token_id])

    def to_dict(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        if set(data) != {"chars"} or not isinstance(data["chars"], str):
            raise LmlabError(f"char tokenizer file needs exactly a 'chars' string, got keys {sorted(data)}; re-save it with lmlab")
        return cls(data["chars"])
