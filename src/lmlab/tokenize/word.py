"""Word-level tokenizer: whitespace-separated words (optionally with punctuation split off).

The classic vocabulary of word-level language models (PTB, WikiText): the most frequent words of
the training text, `<unk>` for everything else, and optionally `<eos>` for every line end.
Decoding is lossy by nature: words are joined with single spaces and `<eos>` becomes a newline.
Characters and subwords are in char.py and bpe.py.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator, Sequence

import numpy as np

from lmlab.errors import LmlabError
from lmlab.tokenize.base import Tokenizer

UNK = "<unk>"
EOS = "<eos>"
_OPTIONS = ("lowercase", "split_punctuation", "eos_per_line")


class WordTokenizer(Tokenizer):
    """Words <-> ids. The vocabulary lists the special tokens first, then words by frequency.

    Options (fixed at training time, stored in the file):
    - `lowercase`: lowercase all text before splitting.
    - `split_punctuation`: "don't!" -> "don", "'", "t", "!" (words are runs of letters, digits and
      `_`; punctuation runs are tokens of their own). Otherwise only whitespace separates tokens.
    - `eos_per_line`: every newline becomes an `<eos>` token that the model predicts, as in the
      PTB and WikiText setups; it decodes back to "\\n". `eot_id` stays None even then: `<eos>`
      ends a line, not the text, so generation runs on across lines (pass stop=["\\n"] to stop).

    A special token written in the text (PTB writes `<unk>` for rare words) maps to its id.

    >>> tok = WordTokenizer.train("the cat sat.\\nthe dog sat!\\n", eos_per_line=True)
    >>> tok.vocab
    ['<unk>', '<eos>', 'sat', 'the', '!', '.', 'cat', 'dog']
    >>> tok.encode("the bird sat.\\n")
    [3, 0, 2, 5, 1]
    >>> tok.decode([3, 0, 2, 5, 1, 3, 6])
    'the <unk> sat .\\nthe cat'
    """

    kind = "word"

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        lowercase: bool = False,
        split_punctuation: bool = True,
        eos_per_line: bool = False,
    ) -> None:
        specials = _specials(eos_per_line)
        if list(vocab[: len(specials)]) != specials or len(set(vocab)) != len(vocab):
            raise LmlabError(f"word vocabulary must start with {specials} and have no duplicates; retrain it with WordTokenizer.train")
        self.vocab = list(vocab)
        self.lowercase = lowercase
        self.split_punctuation = split_punctuation
        self.eos_per_line = eos_per_line
        self._index = {word: i for i, word in enumerate(self.vocab)}
        if eos_per_line:
            self._index["\n"] = self._index[EOS]
        self._pattern = _token_pattern(specials, split_punctuation, eos_per_line)
        self._pieces = ["\n" if word == EOS else word for word in self.vocab]

    @classmethod
    def train(
        cls,
        text: str,
        lowercase: bool = False,
        min_freq: int = 1,
        max_vocab: int | None = None,
        split_punctuation: bool = True,
        eos_per_line: bool = False,
    ) -> "WordTokenizer":
        """Keep words seen at least `min_freq` times, most frequent first (ties alphabetical).

        `max_vocab` caps the whole vocabulary, special tokens included (PTB: max_vocab=10000).
        """
        specials = _specials(eos_per_line)
        if not isinstance(min_freq, int) or min_freq < 1:
            raise LmlabError(f"min_freq must be a whole number >= 1, got {min_freq!r}")
        if max_vocab is not None and (not isinstance(max_vocab, int) or max_vocab <= len(specials)):
            raise LmlabError(f"max_vocab must be more than the {len(specials)} special tokens {specials}, got {max_vocab!r}")
        splitter = cls(specials, lowercase=lowercase, split_punctuation=split_punctuation, eos_per_line=eos_per_line)
        counts = Counter(splitter.words(text))
        words = [w for w, n in counts.items() if n >= min_freq and w not in specials and w != "\n"
                 and _is_text(w)]  # a lone surrogate (not UTF-8) stays <unk>
        words.sort(key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            words = words[: max_vocab - len(specials)]
        return cls(specials + words, lowercase=lowercase, split_punctuation=split_punctuation, eos_per_line=eos_per_line)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(_specials(self.eos_per_line))}

    def split(self, text: str) -> list[str]:
        """The token strings of `text`, before vocabulary lookup ("\\n" marks a line end).

        >>> WordTokenizer([UNK]).split("Don't  stop<unk>!")
        ['Don', "'", 't', 'stop', '<unk>', '!']
        """
        return self._pattern.findall(text.lower() if self.lowercase else text)

    def words(self, text: str) -> Iterator[str]:
        """`split`, one token string at a time (counting a big corpus needs no list of it)."""
        for match in self._pattern.finditer(text.lower() if self.lowercase else text):
            yield match.group()

    def encode(self, text: str) -> list[int]:
        index = self._index
        return [index.get(word, 0) for word in self.split(text)]

    def encode_array(self, text: str) -> np.ndarray:
        index = self._index
        words = self.split(text)
        return np.fromiter((index.get(word, 0) for word in words), dtype=np.uint32, count=len(words))

    def decode(self, ids: Sequence[int]) -> str:
        """Words joined by single spaces; `<eos>` is a newline with no spaces around it."""
        pieces, size = self._pieces, self.vocab_size
        out = []
        for token_id in ids:
            if not 0 <= token_id < size:
                raise LmlabError(f"token id {token_id} is out of range for this word tokenizer (vocab size {size})")
            out.append(pieces[token_id])
        return " ".join(out).replace(" \n", "\n").replace("\n ", "\n")

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise LmlabError(f"token id {token_id} is out of range for this word tokenizer (vocab size {self.vocab_size})")
        return self.vocab[token_id]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lowercase": self.lowercase,
            "split_punctuation": self.split_punctuation,
            "eos_per_line": self.eos_per_line,
            "vocab": self.vocab,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WordTokenizer":
        expected = {"vocab", *_OPTIONS}
        if set(data) != expected:
            raise LmlabError(f"word tokenizer file needs keys {sorted(expected)}, got {sorted(data)}; re-save it with lmlab")
        return cls(data["vocab"], **{name: bool(data[name]) for name in _OPTIONS})


def _is_text(word: str) -> bool:
    """Whether `word` is valid Unicode text (encodes to UTF-8: no lone surrogates)."""
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _specials(eos_per_line: bool) -> list[str]:
    return [UNK, EOS] if eos_per_line else [UNK]


def _token_pattern(specials: list[str], split_punctuation: bool, eos_per_line: bool) -> re.Pattern[str]:
    """Newlines (if they are tokens), then special tokens kept whole, then words."""
    guard = "".join(f"(?!{re.escape(s)})" for s in specials)  # a punctuation run stops where "<unk>" begins
    words = rf"\w+|(?:{guard}[^\w\s])+" if split_punctuation else r"[^\s]+"
    alternatives = [re.escape(s) for s in specials] if split_punctuation else []
    if eos_per_line:
        alternatives.insert(0, r"\n")
    return re.compile("|".join([*alternatives, words]))
