"""ARPA back-off files: write an lmlab n-gram model for other toolkits (KenLM, SRILM), read theirs.

The format: a `\\data\\` header with `ngram m=count` lines, then one `\\m-grams:` section per
order with lines `log10 P <tab> w1 ... wm [<tab> log10 back-off]`, then `\\end\\`. A .gz path is
read and written compressed.

An interpolated model (kn, mkn, witten-bell) is written the standard way (as lmplz and SRILM do):
each stored n-gram carries its interpolated probability and each context its interpolation
weight as back-off, so a back-off reader computes exactly the model's probabilities. mle and
add-k cannot be written: their unseen words do not follow the shorter context. <s> is a context
only and gets log10 P = -99. The model's <eos> is written as </s> (a model without eos_id gets a
</s> of log10 P = -99, since readers such as KenLM refuse files without one).

Reading gives the model and its vocabulary: <unk> (id 0), <eos> for </s> (id 1), then the other
words in file order, so `WordTokenizer(vocab, eos_per_line=True)` fits it. The model keeps the
file's numbers as they are (smoothing "arpa").

The network is lmlab/models/ngram.py; `lmlab.load` reads ARPA files through the source table in
io/sources.py, and `export_arpa` (io/export.py) writes runs with this module.
"""
from __future__ import annotations

import gzip
import math
import os
import re
from pathlib import Path
from typing import IO, Sequence

import numpy as np

from lmlab.atomic import atomic_write
from lmlab.errors import LmlabError
from lmlab.models.ngram import FROM_ARPA, NGramConfig, NGramLM
from lmlab.models.ngram_smoothing import ADDITIVE, BackoffTables, lookup

LOG10 = math.log(10.0)
ARPA_SPACE = " \t\r\n"  # what separates the fields of an ARPA line; any other character belongs to a word
ZERO = -99.0  # log10 P written for <s>, which is never predicted
MISSING = -100.0  # log10 P given to <unk> or </s> when a file lacks them (as KenLM does)
ARPA_SUFFIXES = (".arpa", ".arpa.gz")  # the names lmlab reads and writes as ARPA files


def _open(path: str | os.PathLike, mode: str, compressed: bool) -> IO[str]:
    if compressed:
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _log10_text(values: np.ndarray) -> np.ndarray:
    """Natural logs as log10 text (an object array of str); -inf as -99."""
    log10 = np.where(np.isfinite(values), values / LOG10, ZERO)
    return np.array([f"{v:.7g}" for v in log10.tolist()], dtype=object)


def write_arpa(model: NGramLM, path: str | os.PathLike, vocab: Sequence[str]) -> None:
    """Write `model` as an ARPA file; `vocab[i]` is the word of token id i (atomic write)."""
    if model.config.smoothing in ADDITIVE:
        raise LmlabError(f"an ARPA file cannot hold a {model.config.smoothing} model (its unseen words do not back "
                         "off to the shorter context); train with smoothing kn, mkn or witten-bell to export")
    if len(vocab) != model.vocab_size:
        raise LmlabError(f"the vocabulary has {len(vocab)} words but the model has vocab_size {model.vocab_size}; "
                         "pass the tokenizer the model was trained with")
    eos_id = model.config.eos_id
    clash = [w for i, w in enumerate(vocab) if (w in ("<s>", "</s>") and i != eos_id) or not w
             or any(c in ARPA_SPACE + "\v\f" for c in w)]
    if clash:
        raise LmlabError(f"ARPA words cannot be empty, hold spaces, or be <s>/</s> (other than <eos>): {clash[:5]}")
    names = np.array([*vocab, "<s>"], dtype=object)
    if eos_id is not None:
        names[eos_id] = "</s>"
    tables, width = model.tables(), model.width

    def write(tmp: str) -> None:
        with _open(tmp, "w", compressed=str(path).endswith(".gz")) as f:
            sizes = [len(keys) for keys in tables.keys]
            sizes[0] += eos_id is None
            f.write("\\data\\\n" + "".join(f"ngram {m}={n}\n" for m, n in enumerate(sizes, 1)))
            text = names
            for m in range(1, model.order + 1):
                keys = tables.keys[m - 1]
                if m > 1:  # an n-gram's text is its context's text, a space, and its last word
                    text = text[keys // width] + (" " + names)[keys % width]
                lines = _log10_text(tables.log_prob[m - 1]) + "\t" + text
                if m < model.order:
                    has = tables.log_backoff[m - 1] != 0
                    lines[has] = lines[has] + "\t" + _log10_text(tables.log_backoff[m - 1][has])
                if m == 1 and eos_id is None:  # readers expect </s>; this model never ends a sentence
                    lines = np.append(lines, f"{ZERO}\t</s>")
                f.write(f"\n\\{m}-grams:\n")
                f.write("\n".join(lines.tolist()))
                f.write("\n")
            f.write("\n\\end\\\n")

    atomic_write(path, write)


def _tokens_per_line(block: str) -> np.ndarray:
    """Tokens on each non-empty line, counted on the bytes (spaces, tabs and CR separate tokens).

    >>> _tokens_per_line("-1.5\\ta b\\t-0.2\\n\\n-2\\tc d\\n").tolist()
    [4, 3]
    """
    data = np.frombuffer(block.encode("utf-8"), np.uint8)
    newline = data == 10
    space = newline | (data == 32) | (data == 9) | (data == 13)
    starts = np.flatnonzero(~space & np.concatenate([[True], space[:-1]]))  # the first byte of every token
    before = np.searchsorted(starts, np.flatnonzero(newline))  # tokens before each line end
    per_line = np.diff(np.concatenate([[0], before, [len(starts)]]))
    return per_line[per_line > 0]


def _sections(text: str, path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split an ARPA file's text into, per order, (tokens as an object array, tokens per line)."""
    lines = text.split("\n", 200)  # the header is short; the sections are found by position
    if "\\data\\" not in (line.strip() for line in lines[:200]):
        raise LmlabError(f"{path} is not an ARPA file (no \\data\\ header)")
    counts = [int(line.split("=", 1)[1]) for line in lines[:200]
              if line.strip().startswith("ngram ") and "=" in line]
    end = text.find("\\end\\")
    sections = []
    for m, expected in enumerate(counts, 1):
        start = text.find(f"\\{m}-grams:")
        if start < 0:
            raise LmlabError(f"{path}: the header announces {m}-grams but there is no \\{m}-grams: section")
        start = text.index("\n", start) + 1
        stop = text.find(f"\\{m + 1}-grams:", start) if m < len(counts) else end
        block = text[start: stop if stop >= 0 else len(text)]
        tokens = block.split()
        per_line = _tokens_per_line(block)
        if per_line.sum() != len(tokens):  # a word holds other whitespace (NBSP, U+202F...): it stays whole,
            stripped = block.strip(ARPA_SPACE)  # as in KenLM and SRILM
            tokens = re.split(f"[{ARPA_SPACE}]+", stripped) if stripped else []
        if len(per_line) != expected or ((per_line != m + 1) & (per_line != m + 2)).any():
            raise LmlabError(f"{path}: the {m}-grams section does not match its header ({len(per_line)} lines for "
                             f"ngram {m}={expected}, each 'log10P w1..w{m} [backoff]')")
        sections.append((np.array(tokens, dtype=object), per_line))
    if not sections:
        raise LmlabError(f"{path} is not an ARPA file (no ngram counts in its header)")
    return sections


def read_arpa(path: str | os.PathLike) -> tuple[NGramLM, list[str]]:
    """Read an ARPA back-off model; returns (model, vocab) with vocab[0] = <unk>, vocab[1] = <eos>."""
    if not Path(path).is_file():
        raise LmlabError(f"ARPA file {path} does not exist")
    try:
        with _open(path, "r", compressed=str(path).endswith(".gz")) as f:
            sections = _sections(f.read(), path)
    except (UnicodeDecodeError, OSError, ValueError) as e:
        if isinstance(e, LmlabError):
            raise
        raise LmlabError(f"{path} is not a readable ARPA file ({e})") from None
    order = len(sections)
    tokens, per_line = sections[0]
    unigrams = tokens[np.cumsum(per_line) - per_line + 1].tolist()
    if "<eos>" in unigrams:
        raise LmlabError(f"{path} has the word <eos>, which lmlab uses for </s>; rename it")
    vocab = ["<unk>", "<eos>"] + [w for w in dict.fromkeys(unigrams) if w not in ("<unk>", "</s>", "<s>")]
    index = {w: i for i, w in enumerate(vocab)}
    index["</s>"], index["<s>"] = 1, len(vocab)
    width = len(vocab) + 1
    log_prob = np.full(width, MISSING * LOG10)
    log_prob[-1] = -np.inf
    tables = BackoffTables([np.arange(width)], [log_prob], [np.zeros(width)])
    for m, (tokens, per_line) in enumerate(sections, 1):
        first = np.cumsum(per_line) - per_line  # each line's first token: its log10 probability
        prob = tokens[first].astype(np.float64) * LOG10
        backoff = np.zeros(len(first))
        has = per_line == m + 2
        backoff[has] = tokens[first[has] + m + 1].astype(np.float64) * LOG10
        try:
            words = np.fromiter(map(index.__getitem__, tokens[(first[:, None] + np.arange(1, m + 1)).reshape(-1)]),
                                np.int64, count=len(first) * m).reshape(-1, m)
        except KeyError as e:
            raise LmlabError(f"{path}: the {m}-grams section uses {e.args[0]!r}, which is not a 1-gram") from None
        if m == 1:
            tables.log_prob[0][words[:, 0]] = np.where(words[:, 0] == width - 1, -np.inf, prob)
            tables.log_backoff[0][words[:, 0]] = backoff
            continue
        row = words[:, 0]
        for j in range(2, m):
            row = np.where(row >= 0, lookup(tables.keys[j - 1], row * width + words[:, j - 1]), -1)
        if (row < 0).any():
            missing = " ".join(vocab[i] if i < len(vocab) else "<s>" for i in words[np.argmax(row < 0), :-1])
            raise LmlabError(f"{path}: a {m}-gram's context {missing!r} is not among the {m - 1}-grams; lmlab reads "
                             "complete files (as lmplz and SRILM write them)")
        keys = row * width + words[:, -1]
        order_of = np.argsort(keys, kind="stable")
        keys = keys[order_of]
        if (np.diff(keys) == 0).any():
            raise LmlabError(f"{path}: the {m}-grams section lists an n-gram twice")
        tables.keys.append(keys)
        tables.log_prob.append(prob[order_of])
        if m < order:
            tables.log_backoff.append(backoff[order_of])
    model = NGramLM(NGramConfig(vocab_size=len(vocab), order=order, smoothing=FROM_ARPA, eos_id=1))
    model.load_tables(tables)
    return model, vocab
