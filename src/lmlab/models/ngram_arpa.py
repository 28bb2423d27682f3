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
"""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import IO, Sequence

import numpy as np

from lmlab.atomic import atomic_write
from lmlab.errors import LmlabError
from lmlab.models.ngram import FROM_ARPA, NGramConfig, NGramLM
from lmlab.models.ngram_smoothing import ADDITIVE, BackoffTables, lookup

LOG10 = math.log(10.0)
ZERO = -99.0  # log10 P written for <s>, which is never predicted
MISSING = -100.0  # log10 P given to <unk> or </s> when a file lacks them (as KenLM does)


def _open(path: str | os.PathLike, mode: str, compressed: bool) -> IO[str]:
    if compressed:
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _number(values: np.ndarray) -> list[str]:
    """Natural logs as log10 text; -inf as -99."""
    log10 = np.where(np.isfinite(values), values / LOG10, ZERO)
    return [f"{v:.7g}" for v in log10.tolist()]


def write_arpa(model: NGramLM, path: str | os.PathLike, vocab: Sequence[str]) -> None:
    """Write `model` as an ARPA file; `vocab[i]` is the word of token id i (atomic write)."""
    if model.config.smoothing in ADDITIVE:
        raise LmlabError(f"an ARPA file cannot hold a {model.config.smoothing} model (its unseen words do not back "
                         "off to the shorter context); train with smoothing kn, mkn or witten-bell to export")
    if len(vocab) != model.vocab_size:
        raise LmlabError(f"the vocabulary has {len(vocab)} words but the model has vocab_size {model.vocab_size}; "
                         "pass the tokenizer the model was trained with")
    names = list(vocab) + ["<s>"]
    no_eos = model.config.eos_id is None
    if not no_eos:
        names[model.config.eos_id] = "</s>"
    clash = [w for i, w in enumerate(vocab) if (w in ("<s>", "</s>") and i != model.config.eos_id) or not w
             or any(c.isspace() for c in w)]
    if clash:
        raise LmlabError(f"ARPA words cannot be empty, hold spaces, or be <s>/</s> (other than <eos>): {clash[:5]}")
    names = np.array(names, dtype=object)
    tables = model.tables()
    words = [model.ngrams(m) for m in range(1, model.order + 1)]

    def write(tmp: str) -> None:
        with _open(tmp, "w", compressed=str(path).endswith(".gz")) as f:
            sizes = [len(w) + (m == 1 and no_eos) for m, w in enumerate(words, 1)]
            f.write("\\data\\\n" + "".join(f"ngram {m}={n}\n" for m, n in enumerate(sizes, 1)))
            for m, w in enumerate(words, 1):
                text = names[w[:, 0]]
                for j in range(1, m):
                    text = text + " " + names[w[:, j]]
                columns = [_number(tables.log_prob[m - 1]), text.tolist()]
                if m < model.order:
                    backoff = tables.log_backoff[m - 1]
                    columns.append(["\t" + b if nonzero else "" for b, nonzero in zip(_number(backoff), backoff != 0)])
                else:
                    columns.append([""] * len(w))
                f.write(f"\n\\{m}-grams:\n")
                f.writelines(f"{p}\t{t}{b}\n" for p, t, b in zip(*columns))
                if m == 1 and no_eos:
                    f.write(f"{ZERO}\t</s>\n")  # readers expect </s>; this model never ends a sentence
            f.write("\n\\end\\\n")

    atomic_write(path, write)


def _sections(f: IO[str]) -> tuple[list[int], list[list[list[str]]]]:
    """The header counts and the split lines of every n-gram section."""
    counts: list[int] = []
    sections: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    seen_data = False
    for number, raw in enumerate(f, 1):
        line = raw.strip()
        if not line:
            continue
        if line == "\\data\\":
            seen_data = True
        elif line == "\\end\\":
            break
        elif line.startswith("ngram ") and current is None:
            counts.append(int(line.split("=", 1)[1]))
        elif line.startswith("\\") and line.endswith("-grams:"):
            if line != f"\\{len(sections) + 1}-grams:":
                raise LmlabError(f"ARPA line {number}: expected \\{len(sections) + 1}-grams:, got {line}")
            current = []
            sections.append(current)
        elif current is not None:
            current.append(line.split())
        elif seen_data:
            raise LmlabError(f"ARPA line {number}: unexpected {line[:60]!r}")
    if not seen_data or not sections:
        raise LmlabError("not an ARPA file: no \\data\\ header or no \\1-grams: section")
    return counts, sections


def read_arpa(path: str | os.PathLike) -> tuple[NGramLM, list[str]]:
    """Read an ARPA back-off model; returns (model, vocab) with vocab[0] = <unk>, vocab[1] = <eos>."""
    if not Path(path).is_file():
        raise LmlabError(f"ARPA file {path} does not exist")
    try:
        with _open(path, "r", compressed=str(path).endswith(".gz")) as f:
            counts, sections = _sections(f)
    except (UnicodeDecodeError, OSError, ValueError) as e:
        if isinstance(e, LmlabError):
            raise
        raise LmlabError(f"{path} is not a readable ARPA file ({e})") from None
    order = len(sections)
    for m, (expected, section) in enumerate(zip(counts, sections), 1):
        if expected != len(section) or any(len(parts) not in (m + 1, m + 2) for parts in section):
            raise LmlabError(f"{path}: the {m}-grams section does not match its header ({len(section)} lines for "
                             f"ngram {m}={expected}, each 'log10P w1..w{m} [backoff]')")
    unigrams = [parts[1] for parts in sections[0]]
    if "<eos>" in unigrams:
        raise LmlabError(f"{path} has the word <eos>, which lmlab uses for </s>; rename it")
    vocab = ["<unk>", "<eos>"] + [w for w in dict.fromkeys(unigrams) if w not in ("<unk>", "</s>", "<s>")]
    index = {w: i for i, w in enumerate(vocab)}
    index["</s>"], index["<s>"] = 1, len(vocab)
    width = len(vocab) + 1
    log_prob = np.full(width, MISSING * LOG10)
    log_prob[-1] = -np.inf
    tables = BackoffTables([np.arange(width)], [log_prob], [np.zeros(width)])
    for m, section in enumerate(sections, 1):
        try:
            words = np.array([[index[w] for w in parts[1 : m + 1]] for parts in section], np.int64).reshape(-1, m)
        except KeyError as e:
            raise LmlabError(f"{path}: the {m}-gram section uses {e.args[0]!r}, which is not a 1-gram") from None
        prob = np.array([float(parts[0]) for parts in section]) * LOG10
        backoff = np.array([float(parts[m + 1]) if len(parts) == m + 2 else 0.0 for parts in section]) * LOG10
        if m == 1:
            keys = words[:, 0]
            prob = np.where(keys == width - 1, -np.inf, prob)
            tables.log_prob[0][keys], tables.log_backoff[0][keys] = prob, backoff
        else:
            row = words[:, 0]
            for j in range(2, m):
                row = np.where(row >= 0, lookup(tables.keys[j - 1], row * width + words[:, j - 1]), -1)
            if (row < 0).any():
                missing = words[np.argmax(row < 0), :-1]
                raise LmlabError(f"{path}: a {m}-gram's context {' '.join(vocab[i] if i < len(vocab) else '<s>' for i in missing)!r} "
                                 f"is not among the {m - 1}-grams; lmlab reads complete files (as lmplz and SRILM write them)")
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
