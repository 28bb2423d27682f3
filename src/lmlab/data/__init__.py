"""Corpora, splits and batches: text in, memory-mapped token streams and random windows out.

- `read_corpus` reads a text file or a folder of them (UTF-8), with errors that say what to do.
- `split_text` keeps the last 10% (by default) as validation, deterministically.
- `tokenize_to_file` encodes text chunk by chunk into a flat token file, so a large corpus never
  becomes one Python object per token; `TokenStream` memory-maps that file.
- `TokenStream.random_windows` draws training batches; `TokenStream.windows` walks it in order.
- `TokenStream.sequential_batches` cuts it into contiguous rows walked a few tokens at a time, for
  models that carry a state from one batch to the next (truncated BPTT, recurrent evaluation).

Tokenizers live in lmlab/tokenize: this layer only takes an `encode_array` function.
"""
from __future__ import annotations

import importlib.resources
import json
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from lmlab.errors import LmlabError
from lmlab.atomic import atomic_write, atomic_write_json

TEXT_SUFFIXES = {".txt", ".md", ".text", ".raw", ".tokens", ""}
CHUNK_CHARS = 1 << 20  # characters encoded per chunk
CACHE_VERSION = 1


def default_corpus_path() -> Path:
    """Tiny Shakespeare, shipped inside the package so training works offline."""
    return Path(str(importlib.resources.files("lmlab") / "assets" / "tinyshakespeare.txt"))


def corpus_files(path: str | Path) -> list[Path]:
    """The text files behind `path`: the file itself, or a folder's files in sorted order."""
    path = Path(path)
    if not path.exists():
        raise LmlabError(f"data path {path} does not exist; pass a text file or a folder of .txt files")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))  # .git/, .cache/
    if not files:
        raise LmlabError(f"folder {path} holds no text files (.txt, .md, .text, .raw, .tokens)")
    return files


def read_corpus(path: str | Path) -> str:
    """Read one text file or every text file in a folder (joined by newlines) as UTF-8; a
    byte-order mark at the start of a file is dropped."""
    parts = []
    for file in corpus_files(path):
        try:
            parts.append(file.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as e:
            raise LmlabError(f"{file} is not UTF-8 text (byte {e.start}); convert it, e.g. "
                             f"iconv -f LATIN1 -t UTF-8") from None
        except OSError as e:
            raise LmlabError(f"cannot read {file}: {e.strerror}") from None
    text = "\n".join(parts)
    if not text or text.isspace():  # (no stripped copy of a big corpus)
        raise LmlabError(f"corpus {path} is empty; give it some text to learn from")
    return text


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split into (train, validation): the last `val_fraction` of the characters is validation.

    >>> split_text("abcdefghij", 0.2)
    ('abcdefgh', 'ij')
    >>> split_text("abcdefghij", 0.9)  # computed on the decimal 0.9, not its binary neighbour
    ('a', 'bcdefghij')
    """
    if not 0.0 < val_fraction < 1.0:
        raise LmlabError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = math.floor(len(text) * (1 - Fraction(repr(float(val_fraction)))))
    return text[:cut], text[cut:]


def chunk_text(text: str, chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """Cut text into pieces at safe places (`_SAFE_CUT`): after a newline or before a space, each
    lying between two non-space characters, or between the last two newlines before a letter.

    Cutting there never changes how a tokenizer splits words or runs of whitespace, so encoding
    the pieces one by one gives the same ids as encoding the whole text.

    >>> list(chunk_text("ab\\n\\ncd\\nef\\ngh", 3))
    ['ab\\n', '\\ncd\\n', 'ef\\ngh']
    >>> list(chunk_text("one two  three", 2))
    ['one', ' two  three']
    """
    start = 0
    while start < len(text):
        match = _SAFE_CUT.search(text, start + chunk_chars) if start + chunk_chars < len(text) else None
        if match is None:
            yield text[start:]
            return
        yield text[start:match.end()]
        start = match.end()


# After a newline or before a space between two non-spaces, or between the last two newlines of a run
# that a letter or digit follows (paragraphs of CJK text have no spaces and blank lines between them).
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)|(?<=\S)(?= \S)|(?<=\n)(?=\n\w)")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def tokenize_to_file(text: str, encode_array: Callable[[str], np.ndarray], vocab_size: int,
                     path: str | Path) -> "TokenStream":
    """Encode `text` chunk by chunk into a flat token file at `path` (written atomically)."""
    dtype = token_dtype(vocab_size)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            for piece in chunk_text(text):
                f.write(np.asarray(encode_array(piece)).astype(dtype, copy=False).tobytes())

    atomic_write(path, write)
    atomic_write_json(str(path) + ".json", {"version": CACHE_VERSION, "dtype": dtype.name, "vocab_size": vocab_size})
    return TokenStream.open(path)


class TokenStream:
    """A memory-mapped 1-D array of token ids with batching helpers."""

    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens

    @classmethod
    def open(cls, path: str | Path) -> "TokenStream":
        """Map a token file written by `tokenize_to_file`; LmlabError if it or its .json is damaged."""
        try:
            meta = json.loads(Path(str(path) + ".json").read_text(encoding="utf-8"))
            dtype = np.dtype(meta["dtype"])
            size = Path(path).stat().st_size
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise LmlabError(f"the token file {path} or its .json is unreadable ({e})") from None
        if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)) or size % dtype.itemsize:
            raise LmlabError(f"the token file {path} is damaged ({size} bytes of {dtype.name})")
        if size == 0:
            return cls(np.zeros(0, dtype=dtype))
        return cls(np.memmap(path, dtype=dtype, mode="r"))

    @classmethod
    def from_ids(cls, ids: np.ndarray | list[int]) -> "TokenStream":
        return cls(np.asarray(ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.tokens)

    def random_windows(self, batch_size: int, context_len: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of random windows: inputs (B, T) and next-token targets (B, T), as int64."""
        if len(self) < context_len + 1:
            raise LmlabError(f"only {len(self)} tokens of training data, fewer than context_len + 1 = "
                             f"{context_len + 1}; use more text or a smaller context_len", params=("context_len",))
        starts = torch.randint(len(self) - context_len, (batch_size,), generator=generator).numpy()
        rows = self.tokens[starts[:, None] + np.arange(context_len + 1)].astype(np.int64)  # (B, T + 1)
        window = torch.from_numpy(rows)
        return window[:, :-1], window[:, 1:]

    def windows(self, context_len: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows covering every token after the first, in order, batched.

        The last window may be shorter; each batch holds windows of one length.
        """
        n_targets = len(self) - 1
        starts = list(range(0, n_targets, context_len))
        full = [s for s in starts if s + context_len <= n_targets]
        for i in range(0, len(full), batch_size):
            rows = np.stack([self.tokens[s: s + context_len + 1] for s in full[i: i + batch_size]]).astype(np.int64)
            window = torch.from_numpy(rows)
            yield window[:, :-1], window[:, 1:]
        if len(full) < len(starts):
            s = starts[-1]
            window = torch.from_numpy(np.asarray(self.tokens[s:], dtype=np.int64))[None]
            yield window[:, :-1], window[:, 1:]

    def _row_targets(self, batch_size: int) -> int:
        if len(self) < 2:
            raise LmlabError(f"only {len(self)} token(s): there is nothing to predict; use more text")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise LmlabError(f"batch_size must be a positive integer, got {batch_size!r}")
        return math.ceil((len(self) - 1) / batch_size)

    def num_sequential_batches(self, batch_size: int, bptt: int) -> int:
        """How many batches one pass of `sequential_batches` has (an epoch).

        >>> TokenStream.from_ids(range(11)).num_sequential_batches(2, 3)
        2
        """
        if not isinstance(bptt, int) or bptt < 1:
            raise LmlabError(f"bptt must be a positive integer, got {bptt!r}")
        return math.ceil(self._row_targets(batch_size) / bptt)

    def sequential_batch(self, index: int, batch_size: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of `sequential_batches` (random access, so a run can resume mid-epoch).

        The stream is cut into `batch_size` contiguous rows of L = ceil((len - 1) / batch_size)
        targets each: row r reads tokens r*L .. r*L + L - 1 and predicts the token after each, so
        every token after the first is a target exactly once. Batch i is columns i*bptt .. i*bptt +
        bptt - 1 of every row (the last batch may be shorter). Past the end of the stream, inputs
        are 0 and targets -1 (ignored by the loss).

        >>> x, y = TokenStream.from_ids(range(10)).sequential_batch(1, batch_size=2, bptt=3)
        >>> x.tolist(), y.tolist()
        ([[3, 4], [8, 9]], [[4, 5], [9, -1]])
        """
        row_targets = self._row_targets(batch_size)
        n_batches = self.num_sequential_batches(batch_size, bptt)
        if not 0 <= index < n_batches:
            raise LmlabError(f"batch index {index} is out of range: an epoch has {n_batches} batches")
        start = index * bptt
        width = min(bptt, row_targets - start)
        offsets = np.arange(batch_size)[:, None] * row_targets + start + np.arange(width + 1)  # (B, T + 1)
        inside = offsets < len(self)
        window = np.where(inside, self.tokens[np.minimum(offsets, len(self) - 1)].astype(np.int64), -1)
        window = torch.from_numpy(window)
        return window[:, :-1].clamp(min=0), window[:, 1:]

    def sequential_batches(self, batch_size: int, bptt: int, start: int = 0
                           ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the stream as `batch_size` contiguous rows, `bptt` tokens at a time: inputs
        (B, T) and targets (B, T), where each batch continues the one before it row by row, so a
        model can carry its state across them. Begins at batch `start`. See `sequential_batch`.

        >>> [y.tolist() for _, y in TokenStream.from_ids(range(7)).sequential_batches(2, 2)]
        [[[1, 2], [4, 5]], [[3], [6]]]
        """
        for index in range(start, self.num_sequential_batches(batch_size, bptt)):
            yield self.sequential_batch(index, batch_size, bptt)
