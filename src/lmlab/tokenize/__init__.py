"""Tokenizers: char, word, byte-level BPE and pretrained GPT-2 behind one interface.

`build_tokenizer("bpe", text, vocab_size=8192)` trains or builds one by name; `load(path)` reads
any saved one back. The interface and file format are in base.py, one family per file. Turning a
corpus into a memmapped token stream is lmlab.data's job, not this package's.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from lmlab.errors import LmlabError
from lmlab.tokenize.base import Tokenizer, load
from lmlab.tokenize.bpe import BPETokenizer
from lmlab.tokenize.char import CharTokenizer
from lmlab.tokenize.gguf import SentencePieceTokenizer
from lmlab.tokenize.gpt2 import GPT2Tokenizer
from lmlab.tokenize.word import WordTokenizer

__all__ = [
    "TOKENIZERS",
    "BPETokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "build_tokenizer",
    "load",
]

TOKENIZERS = ("char", "word", "bpe", "gpt2")
_TRAINABLE = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}


def build_tokenizer(spec: str, text: str | None = None, **options: Any) -> Tokenizer:
    """A tokenizer from a name ("char", "word", "bpe", "gpt2") or a saved tokenizer file.

    char, word and bpe are trained on `text` with `options` (see their `train` methods); gpt2 is
    pretrained; a path to a .json file (or to a directory holding tokenizer.json) is loaded.

    >>> build_tokenizer("char", "abca").encode("cab")
    [2, 0, 1]
    >>> build_tokenizer("gpt2").vocab_size
    50257
    """
    if spec in _TRAINABLE:
        cls = _TRAINABLE[spec]
        _check_options(spec, cls.train, options)
        if not text:
            raise LmlabError(f"the {spec} tokenizer is trained on text: pass the training text (got none)")
        return cls.train(text, **options)
    if options:
        raise LmlabError(f"the {spec} tokenizer takes no options, got {', '.join(sorted(options))}")
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


def _check_options(spec: str, train: Callable[..., Tokenizer], options: dict[str, Any]) -> None:
    accepted = list(inspect.signature(train).parameters)[1:]  # after the text
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise LmlabError(
            f"unknown option(s) for the {spec} tokenizer: {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) if accepted else 'none'}"
        )
