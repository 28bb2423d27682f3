"""Tokenizers: char, word, byte-level BPE and pretrained GPT-2 behind one interface.

`build_tokenizer("bpe", text, vocab_size=8192)` trains or builds one by name; `load(path)` reads
any saved one back; `TRAIN_OPTIONS` says which options each trainable one takes. The interface
and file format are in base.py, one family per file. Turning a corpus into a memmapped token
stream is lmlab.data's job, not this package's.
"""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from lmlab.errors import LmlabError
from lmlab.tokenize.base import Tokenizer, load
from lmlab.tokenize.bpe import BPETokenizer
from lmlab.tokenize.char import CharTokenizer
from lmlab.tokenize.gguf import SentencePieceTokenizer
from lmlab.tokenize.gpt2 import GPT2Tokenizer
from lmlab.tokenize.word import WordTokenizer

__all__ = [
    "TOKENIZERS",
    "TRAIN_OPTIONS",
    "BPETokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "build_tokenizer",
    "check_options",
    "load",
]

TOKENIZERS = ("char", "word", "bpe", "gpt2")
_TRAINABLE = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}

# The options `build_tokenizer` takes for each tokenizer it trains: option -> the parameter of the
# tokenizer's `train` that receives it. One name per idea across tokenizers: `vocab_size` caps
# every vocabulary (the word tokenizer's `max_vocab`).
TRAIN_OPTIONS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "char": {},
    "word": {"vocab_size": "max_vocab", "min_freq": "min_freq", "lowercase": "lowercase",
             "split_punctuation": "split_punctuation", "eos_per_line": "eos_per_line"},
    "bpe": {"vocab_size": "vocab_size", "min_frequency": "min_frequency", "special_tokens": "special_tokens"},
})


def build_tokenizer(spec: str, text: str | None = None, **options: Any) -> Tokenizer:
    """A tokenizer from a name ("char", "word", "bpe", "gpt2") or a saved tokenizer file.

    char, word and bpe are trained on `text` with `options` (`TRAIN_OPTIONS` has their names; the
    `train` methods say what they do); gpt2 is pretrained; a path to a .json file (or to a
    directory holding tokenizer.json) is loaded.

    >>> build_tokenizer("char", "abca").encode("cab")
    [2, 0, 1]
    >>> build_tokenizer("gpt2").vocab_size
    50257
    """
    check_options(spec, options)
    if spec in _TRAINABLE:
        if not text:
            raise LmlabError(f"the {spec} tokenizer is trained on text: pass the training text (got none)")
        parameters = TRAIN_OPTIONS[spec]
        return _TRAINABLE[spec].train(text, **{parameters[name]: value for name, value in options.items()})
    if spec == "gpt2":
        return GPT2Tokenizer()
    path = Path(spec)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if path.suffix == ".json" or path.is_file():
        return load(path)
    if path.is_dir():
        raise LmlabError(f"{path} is a folder without a tokenizer.json; give a run directory or a saved tokenizer .json")
    raise LmlabError(f"unknown tokenizer {spec!r}: choose one of {', '.join(TOKENIZERS)}, or give the path of a saved tokenizer .json")


def check_options(spec: str, options: Mapping[str, Any]) -> None:
    """Fail unless the tokenizer `spec` (a name or a saved file) takes every option in `options`.

    >>> check_options("char", {"lowercase": True})
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: lowercase is only for tokenizer word (got tokenizer char)
    """
    accepted = TRAIN_OPTIONS.get(spec, {})
    wrong = [name for name in options if name not in accepted]
    if not wrong:
        return
    unknown = sorted(name for name in wrong if not any(name in taken for taken in TRAIN_OPTIONS.values()))
    if spec not in TRAIN_OPTIONS and not unknown:  # gpt2 or a saved file: nothing to train
        raise LmlabError(f"the {spec} tokenizer takes no options, got {', '.join(wrong)}", params=tuple(wrong))
    if unknown:
        raise LmlabError(f"unknown option(s) for the {spec} tokenizer: {', '.join(unknown)}; "
                         f"accepted: {', '.join(accepted) or 'none'}")
    by_owners: dict[str, list[str]] = {}  # "word or bpe" -> the options only those take
    for name in wrong:
        by_owners.setdefault(" or ".join(k for k, taken in TRAIN_OPTIONS.items() if name in taken), []).append(name)
    only = ", ".join(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} only for tokenizer {owners}"
                     for owners, names in by_owners.items())
    raise LmlabError(f"{only} (got tokenizer {spec})", params=(*wrong, "tokenizer"))
