"""N-gram counting and smoothing: from token ids to back-off tables, vectorised with numpy.

`sentence_stream` lays token ids out as sentences, `count_ngrams` finds the distinct n-grams of
every order with np.unique on packed int64 keys, and the estimators in SMOOTHINGS turn the counts
into per-order log-probabilities and log back-off weights. There is no per-n-gram Python object
here and no torch: the model that holds the tables and answers queries is ngram.py; ARPA files
are lmlab/io/arpa.py.

Keys. Ids run over the vocabulary plus one extra id, `width - 1`, for <s> (a sentence start; it
is a context, never a prediction). The table of order m lists its distinct m-grams as sorted keys
`row(first m-1 words) * width + last word`, where row() is an entry's index in the table of order
m-1; the unigram table is dense (row = word id). Keys never collide, the continuations of one
context are one contiguous slice, and finding an n-gram is one searchsorted per order.

Tables. Each entry holds log P(last word | the words before it) and, for orders below the top, a
log back-off weight used when it is the context: the ARPA form. Interpolated smoothing (kn, mkn,
witten-bell) converts into it exactly: an n-gram's stored probability is its interpolated one and
a context's back-off weight is its interpolation weight. mle and add-k use the same arrays but
back off to the uniform distribution from the longest context seen in training (ngram.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # KenLM's --discount_fallback, for tiny or artificial corpora


def sentence_stream(ids: np.ndarray, eos_id: int | None, bos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay the rows of `ids` (B, T) out as one stream with <s> (`bos_id`) before every row and
    after every `eos_id`; return (stream, position of each token in the stream (B, T)).

    >>> stream, pos = sentence_stream(np.array([[5, 1, 6]]), eos_id=1, bos_id=9)
    >>> stream.tolist(), pos.tolist()
    ([9, 5, 1, 9, 6], [[1, 2, 4]])
    """
    B, T = ids.shape
    flat = ids.reshape(-1).astype(np.int64)
    is_eos = (flat == eos_id).astype(np.int64) if eos_id is not None else np.zeros(len(flat), np.int64)
    eos_before = np.cumsum(is_eos) - is_eos  # <eos> tokens strictly before each token
    index = np.arange(B * T)
    pos = index + index // max(T, 1) + 1 + eos_before  # every earlier <s> shifts a token right by one
    stream = np.full(B * T + B + int(is_eos.sum()), bos_id, dtype=np.int64)
    stream[pos] = flat
    return stream, pos.reshape(B, T)


def lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row of each query key in the sorted `keys`, or -1 where it is absent.

    >>> lookup(np.array([3, 8, 20]), np.array([8, 5, 20, 99])).tolist()
    [1, -1, 2, -1]
    """
    if len(keys) == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    rows = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[rows] == query, rows, -1)


@dataclass
class NGramCounts:
    """The distinct n-grams of orders 1..N of one corpus; list index m-1 holds order m.

    keys: sorted keys (order 1: every id, dense); counts: how often each occurs (order 1: dense,
    <s> counts 0); suffix: the row of an n-gram's last m-1 words in the order m-1 table (order 1:
    empty); starts_with_bos: whether the n-gram begins with <s>.
    """

    width: int
    keys: list[np.ndarray]
    counts: list[np.ndarray]
    suffix: list[np.ndarray]
    starts_with_bos: list[np.ndarray]

    @property
    def vocab_size(self) -> int:
        return self.width - 1

    def prefix(self, order: int) -> np.ndarray:
        """Rows of the contexts (first m-1 words) of the order-m n-grams in the order m-1 table."""
        return self.keys[order - 1] // self.width


@dataclass
class BackoffTables:
    """What a back-off model stores; list index m-1 holds order m (log_backoff stops at N-1).

    keys as in NGramCounts; log_prob: natural log P(last word | the words before it), -inf for
    <s>; log_backoff: natural log back-off weight of the n-gram as a context (0 where it is none).
    """

    keys: list[np.ndarray]
    log_prob: list[np.ndarray]
    log_backoff: list[np.ndarray]


def count_ngrams(stream: np.ndarray, order: int, width: int) -> NGramCounts:
    """Count the n-grams of orders 1..`order` in `stream` (ids < width; <s> = width - 1 starts
    each sentence). N-grams never cross a sentence start; only their first word may be <s>.

    "<s> a b </s> <s> a </s>" with a=0, b=1, </s>=2, <s>=3: bigram keys row(first) * 4 + second.
    >>> c = count_ngrams(np.array([3, 0, 1, 2, 3, 0, 2]), order=2, width=4)
    >>> c.counts[0].tolist(), c.keys[1].tolist(), c.counts[1].tolist()
    ([2, 1, 2, 0], [1, 2, 6, 12], [1, 1, 1, 2])
    """
    stream = np.asarray(stream, dtype=np.int64)
    is_bos = stream == width - 1
    counts = NGramCounts(width, [np.arange(width)], [np.bincount(stream[~is_bos], minlength=width)],
                         [np.empty(0, np.int64)], [np.arange(width) == width - 1])
    rows = stream  # row of the (m-1)-gram that ends at each position, -1 where there is none
    for m in range(2, order + 1):
        pos = np.flatnonzero((rows[:-1] >= 0) & ~is_bos[1:]) + 1  # where an m-gram ends
        keys, inverse, n = np.unique(rows[pos - 1] * width + stream[pos], return_inverse=True, return_counts=True)
        suffix = np.empty(len(keys), np.int64)
        suffix[inverse] = rows[pos]
        starts = np.zeros(len(keys), bool)
        starts[inverse] = is_bos[pos - m + 1]
        rows = np.full(len(stream), -1, np.int64)
        rows[pos] = inverse
        counts.keys.append(keys)
        counts.counts.append(n)
        counts.suffix.append(suffix)
        counts.starts_with_bos.append(starts)
    return counts


def adjusted_counts(counts: NGramCounts) -> list[np.ndarray]:
    """Kneser-Ney's counts: the top order, and n-grams that begin with <s>, keep their counts;
    every other n-gram counts the distinct words seen before it (N1+(. w)). <s> counts 0.

    >>> c = count_ngrams(np.array([3, 0, 1, 2, 3, 0, 2]), order=2, width=4)
    >>> [a.tolist() for a in adjusted_counts(c)]  # a follows <s> only; </s> follows a and b
    [[1, 1, 2, 0], [1, 1, 1, 2]]
    """
    top = len(counts.keys)
    adjusted = []
    for m in range(1, top + 1):
        raw = counts.counts[m - 1]
        if m == top:
            a = raw.copy()
        else:
            a = np.bincount(counts.suffix[m], minlength=len(raw))
            starts = counts.starts_with_bos[m - 1]
            a[starts] = raw[starts]
        if m == 1:
            a[counts.width - 1] = 0
        adjusted.append(a)
    return adjusted


def count_of_counts(counts: np.ndarray) -> tuple[int, int, int, int]:
    """How many n-grams have count 1, 2, 3 and 4.

    >>> count_of_counts(np.array([1, 1, 2, 5, 0, 4]))
    (2, 1, 0, 1)
    """
    n = np.bincount(np.minimum(counts, 5), minlength=6)
    return int(n[1]), int(n[2]), int(n[3]), int(n[4])


def kn_discount(n1: int, n2: int) -> float:
    """Kneser-Ney's one discount D = n1 / (n1 + 2 n2) (Ney et al.), or 0.5 if nothing occurs once.

    >>> kn_discount(30, 10), kn_discount(0, 4)
    (0.6, 0.5)
    """
    return n1 / (n1 + 2 * n2) if n1 > 0 else FALLBACK_DISCOUNTS[0]


def mkn_discounts(n1: int, n2: int, n3: int, n4: int) -> tuple[float, float, float]:
    """Modified Kneser-Ney's D1, D2, D3+ (Chen & Goodman, eq. 26) from the count-of-counts; KenLM's
    fallback (0.5, 1, 1.5) when a count-of-count is zero or a discount would leave (0, k].

    >>> [round(d, 4) for d in mkn_discounts(100, 40, 20, 10)]
    [0.5556, 1.1667, 1.8889]
    >>> mkn_discounts(5, 0, 0, 0)
    (0.5, 1.0, 1.5)
    """
    if min(n1, n2, n3) == 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    discounts = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d <= k for k, d in enumerate(discounts, 1)):
        return FALLBACK_DISCOUNTS
    return discounts


def _interpolated(counts: NGramCounts, parts: list[tuple[np.ndarray, np.ndarray]]) -> BackoffTables:
    """P(w | h) = (num(hw) + lam(h) P(w | h')) / sum over w of (num + weight), lam(h) = sum of weight.

    `parts[m-1]` = (num, weight) per order-m n-gram; below unigrams is the uniform distribution.
    """
    V, width = counts.vocab_size, counts.width
    log_prob, log_backoff = [], []
    with np.errstate(divide="ignore"):
        for m, (num, weight) in enumerate(parts, 1):
            if m == 1:
                prob = (num + weight.sum() / V) / (num.sum() + weight.sum())
                prob[width - 1] = 0.0  # <s> is never predicted
            else:
                prefix, n_context = counts.prefix(m), len(counts.keys[m - 2])
                denominator = np.bincount(prefix, num + weight, n_context)
                lam = np.bincount(prefix, weight, n_context)
                prob = (num + lam[prefix] * prob[counts.suffix[m - 1]]) / denominator[prefix]
                seen = denominator > 0  # an n-gram that is never a context (ends in </s>) backs off to nothing
                log_backoff.append(np.log(np.where(seen, lam, 1.0) / np.where(seen, denominator, 1.0)))
            log_prob.append(np.log(prob))
    return BackoffTables(counts.keys, log_prob, log_backoff)


def kneser_ney(counts: NGramCounts, k: float = 0.0) -> BackoffTables:
    """Interpolated Kneser-Ney with one discount per order."""
    parts = []
    for a in adjusted_counts(counts):
        d = np.array([0.0, *[kn_discount(*count_of_counts(a)[:2])] * 3])[np.minimum(a, 3)]
        parts.append((a - d, d))
    return _interpolated(counts, parts)


def modified_kneser_ney(counts: NGramCounts, k: float = 0.0) -> BackoffTables:
    """Interpolated modified Kneser-Ney (Chen & Goodman): D1, D2, D3+ per order, as KenLM's lmplz."""
    parts = []
    for a in adjusted_counts(counts):
        d = np.array([0.0, *mkn_discounts(*count_of_counts(a))])[np.minimum(a, 3)]
        parts.append((a - d, d))
    return _interpolated(counts, parts)


def witten_bell(counts: NGramCounts, k: float = 0.0) -> BackoffTables:
    """Interpolated Witten-Bell: a context gives the lower order as much weight as it has types."""
    return _interpolated(counts, [(c.astype(float), (c > 0).astype(float)) for c in counts.counts])


def additive(counts: NGramCounts, k: float) -> BackoffTables:
    """P(w | h) = (c(hw) + k) / (c(h) + k V); the weight of the uniform rest is k V / (c(h) + k V)."""
    V, width = counts.vocab_size, counts.width
    log_prob, log_backoff = [], []
    with np.errstate(divide="ignore"):
        for m, c in enumerate(counts.counts, 1):
            c = c.astype(float)
            if m == 1:
                prob = (c + k) / (c.sum() + k * V)
                prob[width - 1] = 0.0
            else:
                context = np.bincount(counts.prefix(m), c, len(counts.keys[m - 2]))
                prob = (c + k) / (context[counts.prefix(m)] + k * V)
                seen = context > 0  # an n-gram that is never a context backs off to nothing
                log_backoff.append(np.log(np.where(seen, k * V / np.where(seen, context + k * V, 1.0), 1.0)))
            log_prob.append(np.log(prob))
    return BackoffTables(counts.keys, log_prob, log_backoff)


def maximum_likelihood(counts: NGramCounts, k: float = 0.0) -> BackoffTables:
    """P(w | h) = c(hw) / c(h): unseen words get probability 0."""
    return additive(counts, 0.0)


SMOOTHINGS: dict[str, Callable[[NGramCounts, float], BackoffTables]] = {
    "mle": maximum_likelihood,
    "add-k": additive,
    "witten-bell": witten_bell,
    "kn": kneser_ney,
    "mkn": modified_kneser_ney,
}
ADDITIVE = ("mle", "add-k")  # back off to the uniform distribution, not to the shorter context
