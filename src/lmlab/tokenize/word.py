"""Word-level tokenizer: words with punctuation split off (or whitespace-separated words).

The classic vocabulary of word-level language models (PTB, WikiText): the most frequent words of
the training text, `<unk>` for everything else, and optionally `<eos>` for every line end.
Decoding is lossy by nature: words are joined with single spaces and `<eos>` becomes a newline.
How text is cut into words is `_split_rule_2` at the bottom of this file (and `_split_rule_1`, the
rule of files saved before it). Characters and subwords are in char.py and bpe.py.
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
SPLIT_VERSION = 2  # the punctuation rule of new tokenizers; a file without "split_version" uses rule 1
_OPTIONS = ("lowercase", "split_punctuation", "eos_per_line")


class WordTokenizer(Tokenizer):
    """Words <-> ids. The vocabulary lists the special tokens first, then words by frequency.

    Options (fixed at training time, stored in the file):
    - `lowercase`: lowercase every word (split_version 1: the text, before splitting it).
    - `split_punctuation`: punctuation marks are tokens of their own ("stop!" -> "stop", "!"), but
      apostrophes, hyphens and periods inside a word, clitics and abbreviations stay whole
      ("don't", "n't", "'s", "third-quarter", "Mr.", "u.s."), so text that is already tokenized
      (PTB, WikiText) keeps its own tokens; `_split_rule_2` has the details. Otherwise only
      whitespace separates tokens.
    - `split_version`: the punctuation rule, 2 unless a file says otherwise. Files saved before
      rule 2 existed use rule 1, where every run of punctuation is a token ("don't!" -> "don",
      "'", "t", "!"), so a tokenizer always splits as it did when it was trained.
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
        split_version: int = SPLIT_VERSION,
    ) -> None:
        specials = _specials(eos_per_line)
        if isinstance(split_version, bool) or split_version not in _SPLIT_RULES:
            raise LmlabError(f"word tokenizer split_version must be one of {sorted(_SPLIT_RULES)}, got "
                             f"{split_version!r} (a file from a newer lmlab? upgrade: pip install -U lmlab)")
        if list(vocab[: len(specials)]) != specials or len(set(vocab)) != len(vocab):
            raise LmlabError(f"word vocabulary must start with {specials} and have no duplicates; retrain it with WordTokenizer.train")
        self.vocab = list(vocab)
        self.lowercase = lowercase
        self.split_punctuation = split_punctuation
        self.eos_per_line = eos_per_line
        self.split_version = split_version
        self._index = {word: i for i, word in enumerate(self.vocab)}
        if eos_per_line:
            self._index["\n"] = self._index[EOS]
        # Rule 1 lowercased the text before splitting it. Rule 2 splits first, because whether a
        # period ends a sentence depends on the capital letter after it ("home. Then").
        self._lowercase_text = lowercase and split_version == 1
        self._lowercase_words = lowercase and split_version != 1
        self._pattern = _token_pattern(specials, split_punctuation, split_version, eos_per_line,
                                       ignore_case=self._lowercase_words)
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
        ["Don't", 'stop', '<unk>', '!']
        >>> WordTokenizer([UNK], split_version=1).split("Don't  stop<unk>!")
        ['Don', "'", 't', 'stop', '<unk>', '!']
        """
        words = self._pattern.findall(text.lower() if self._lowercase_text else text)
        return [word.lower() for word in words] if self._lowercase_words else words

    def words(self, text: str) -> Iterator[str]:
        """`split`, one token string at a time (counting a big corpus needs no list of it)."""
        for match in self._pattern.finditer(text.lower() if self._lowercase_text else text):
            yield match.group().lower() if self._lowercase_words else match.group()

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
            "split_version": self.split_version,
            "vocab": self.vocab,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WordTokenizer":
        """A file without "split_version" was saved before rule 2 existed, so it splits with rule 1."""
        expected = {"vocab", *_OPTIONS}
        if set(data) - {"split_version"} != expected:
            raise LmlabError(f"word tokenizer file needs keys {sorted(expected)} (and split_version), "
                             f"got {sorted(data)}; re-save it with lmlab")
        return cls(data["vocab"], **{name: bool(data[name]) for name in _OPTIONS},
                   split_version=data.get("split_version", 1))


def _is_text(word: str) -> bool:
    """Whether `word` is valid Unicode text (encodes to UTF-8: no lone surrogates)."""
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _specials(eos_per_line: bool) -> list[str]:
    return [UNK, EOS] if eos_per_line else [UNK]


def _token_pattern(specials: list[str], split_punctuation: bool, split_version: int, eos_per_line: bool,
                   ignore_case: bool = False) -> re.Pattern[str]:
    """Newlines (if they are tokens), then special tokens kept whole, then words.

    `ignore_case` matches the special tokens in any case ("<UNK>"), for text lowercased after splitting.
    """
    escaped = [re.escape(s) for s in specials]
    if ignore_case:
        escaped = [f"(?i:{s})" for s in escaped]
    words = _SPLIT_RULES[split_version](escaped) if split_punctuation else r"[^\s]+"
    alternatives = escaped if split_punctuation else []
    if eos_per_line:
        alternatives = [r"\n", *alternatives]
    return re.compile("|".join([*alternatives, words]))


def _split_rule_1(specials: list[str]) -> str:
    """The rule of files saved before `split_version` existed: runs of letters, digits and `_` are
    words; every other run of non-space characters is a token, stopping where a special token begins.

    >>> WordTokenizer([UNK], split_version=1).split("Don't stop-(<unk>)!")
    ['Don', "'", 't', 'stop', '-(', '<unk>', ')!']
    """
    guard = "".join(f"(?!{s})" for s in specials)
    return rf"\w+|(?:{guard}[^\w\s])+"


# Rule 2, piece by piece. An apostrophe is ' or its typographic form ’ (U+2019).
_APOSTROPHE = "['\u2019]"
_CLITIC = rf"{_APOSTROPHE}(?:(?i:s|re|ve|m|ll|d|t)|\d\ds)(?!\w)"  # 's 're 've 'm 'll 'd 't, and '80s
# Abbreviations that keep their period wherever they stand: before a capitalized name, a comma, a line end.
_ABBREVIATIONS = (
    "mr mrs ms messrs dr prof st gen gov sen rep rev capt lt col sgt jr sr"  # titles and name suffixes
    " co corp inc ltd bros etc vs"  # companies, and Latin
    " ala ariz calif colo conn del fla ga ind kan kans ky md mich minn mont neb nev okla tenn tex va vt wis wyo"
).split()  # the last line: US states as newspapers (and so PTB) shorten them, less those that are English words
_ABBREVIATION = rf"(?i:{'|'.join(sorted(_ABBREVIATIONS, key=len, reverse=True))})\.(?![\w-])"
_INITIAL = r"(?![Iia]\.)[^\W\d_]\.(?!\w)"  # J. R. Smith; but the words I and a end a sentence
_CURRENCY = r"[A-Za-z]{1,3}\$"  # US$, C$, HK$ (PTB's us$ N); a lone $ is a mark
_JOINER = rf"{_APOSTROPHE}|[-&/]|\\/|\.-?|(?<=\d),(?=\d)"  # PTB escapes / as \/; calif.-based; 1,000
_WORD = rf"\w+(?:(?:{_JOINER})\w+)*"
_MARKS = r"\.{2,}|-{2,}|@[-,.]@|(?:\\[^\w\s])+|[^\w\s]"


def _split_rule_2(specials: list[str]) -> str:
    r"""Words keep what is inside them; the punctuation around them is split off, one mark a token.

    Inside a word, apostrophes, hyphens, periods, & and / stay (don't, rock'n'roll, third-quarter,
    u.s, AT&T, and/or), and so do commas between digits (1,000). A clitic already split off its word
    ('s 're 've 'm 'll 'd 't, as in PTB's "it 's" and WikiText's "don 't"; n't is a word) is one
    token, and so is '80s. Every other mark is a token of its own (an apostrophe at a word's edge is
    a quotation mark, or the possessive of a plural, which PTB writes "dogs '" too), except "...",
    "--", WikiText's @-@ @,@ @.@ and PTB's escaped \* and \/.

    A period at the end of a word ends a sentence, unless the word is an abbreviation: one of
    `_ABBREVIATIONS` (Mr., Inc., Calif.), an initial (J., but not the words I and a), a dotted word
    (u.s., p.m.), or any word after which the sentence goes on, on the same line: in lowercase, with
    a number (or PTB's N, $, #), a comma, 's or a special token ("approx. ten", "Oct. 5", "corp. 's",
    "mr. <unk>"). So PTB and WikiText keep their own tokens (PTB's test and validation sets all of
    them, its training set all but the "a." of "s.p a." at a line end), and prose splits as a
    reader would:

    >>> split = WordTokenizer([UNK]).split
    >>> split("Hello, world! Don't stop rock'n'roll -- it's O’Brien’s.")
    ['Hello', ',', 'world', '!', "Don't", 'stop', "rock'n'roll", '--', "it's", 'O’Brien’s', '.']
    >>> split("'Hello,' said the dogs' owner (Mr. J. Smith of Acme Inc., the U.S.)...")
    ["'", 'Hello', ',', "'", 'said', 'the', 'dogs', "'", 'owner', '(', 'Mr.', 'J.', 'Smith', 'of', 'Acme', 'Inc.', ',', 'the', 'U.S.', ')', '...']
    >>> split("He left at 5 p.m. on Oct. 3. Then I slept, e.g. until 10:30.")
    ['He', 'left', 'at', '5', 'p.m.', 'on', 'Oct.', '3', '.', 'Then', 'I', 'slept', ',', 'e.g.', 'until', '10', ':', '30', '.']
    >>> split("mr. <unk> 's us$ N third-quarter profit does n't include the '80s \\* @-@ 1,000")
    ['mr.', '<unk>', "'s", 'us$', 'N', 'third-quarter', 'profit', 'does', "n't", 'include', 'the', "'80s", '\\*', '@-@', '1,000']
    """
    space = r"[^\S\n]"  # on the same line: a period at a line end ends that line's sentence
    goes_on = rf"{space}*(?:[,;]|{_APOSTROPHE}(?i:s)\b)|{space}+(?:[a-z\d$#]|N\b|{'|'.join(specials)})"
    final_period = rf"(?<=\.[^\W\d_])\.|\.(?={goes_on})"  # after a dotted word, or where the sentence goes on
    shortened = rf"(?=[^\W\d_]+[.$])(?:{_ABBREVIATION}|{_INITIAL}|{_CURRENCY})"  # the look-ahead only saves time
    return "|".join([_CLITIC, shortened, rf"{_WORD}(?:{final_period})?", _MARKS])


_SPLIT_RULES = {1: _split_rule_1, 2: _split_rule_2}
