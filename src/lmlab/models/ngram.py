"""N-gram language model: any order, smoothed, answering the same contract as every lmlab model.

Sentences: lmlab's <eos> token (`eos_id`) plays </s>, which the model predicts; the position after
an <eos>, or the start of the text, is a sentence start, whose context is <s> (one extra id,
`vocab_size`, never predicted). Every vocabulary word, <unk> included, is an ordinary word: the
smoothed models give each one a nonzero probability (the unigram level is interpolated with the
uniform distribution), so no word has infinite surprise; mle gives unseen words probability 0.

The tables (counting and smoothing in ngram_smoothing.py, ARPA files in lmlab/io/arpa.py) are
registered as torch buffers, so `state_dict()` saves them and `load_state_dict` loads tables of
any size. Queries are vectorised: `token_log_probs` scores a whole token stream with one
searchsorted per order; `forward`/`step` return log-probabilities over the vocabulary as logits.
What is not here: perplexity (lmlab/evaluate), decoding (lmlab/generate), commands (lmlab/cli.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.base import lm_loss
from lmlab.models.config import ModelConfig
from lmlab.models.ngram_smoothing import (ADDITIVE, SMOOTHINGS, BackoffTables, count_ngrams, lookup,
                                          sentence_stream)

FROM_ARPA = "arpa"  # the smoothing of a model read from an ARPA file: its tables came as they are
MAX_ORDER = 32


@dataclass(frozen=True)
class NGramConfig(ModelConfig):
    vocab_size: int
    order: int = 3
    smoothing: str = "mkn"  # key of SMOOTHINGS, or "arpa" for tables read from an ARPA file
    k: float = 1.0  # add-k only: the pseudo-count added to every n-gram (1 = Laplace)
    eos_id: int | None = None  # the tokenizer's <eos>: it is </s>, and a sentence starts after it

    def __post_init__(self) -> None:
        for name in ("vocab_size", "order"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LmlabError(f"{name} must be a positive integer, got {value!r}")
        if self.order > MAX_ORDER:
            raise LmlabError(f"order must be at most {MAX_ORDER}, got {self.order} (every order up to n is "
                             "counted and stored; 3 to 6 is usual for words, up to ~12 for characters)")
        if self.smoothing not in SMOOTHINGS and self.smoothing != FROM_ARPA:
            raise LmlabError(f"smoothing must be one of {', '.join(SMOOTHINGS)}, got {self.smoothing!r}")
        if not isinstance(self.k, (int, float)) or not math.isfinite(self.k) or self.k <= 0:
            raise LmlabError(f"k must be a positive number (add-k adds it to every count), got {self.k!r}; "
                             "for no smoothing use smoothing='mle'")
        if self.eos_id is not None and (not isinstance(self.eos_id, int) or not 0 <= self.eos_id < self.vocab_size):
            raise LmlabError(f"eos_id must be None or a token id below vocab_size {self.vocab_size}, got {self.eos_id!r}")


def _stored(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] where index >= 0 (a stored n-gram), 0 where it is -1 (none); also when the
    table is empty, as an order's table is when no sentence was that long."""
    out = np.zeros(index.shape, dtype=np.float64)
    found = index >= 0
    out[found] = values[index[found]]
    return out


class NGramLM(nn.Module):
    """An n-gram model as back-off tables; untrained, it is the uniform distribution.

    Build it with `NGramLM.build(token_ids, config)` or `NGramLM(config).fit(token_ids)` (not
    `train`: nn.Module.train(mode) switches training mode). `context_len` is None: the state of
    `step` is only the last order-1 tokens, but it also knows where the sentence started, which
    a window cropped from the middle of a text would not.
    """

    family = "ngram"
    config_class = NGramConfig

    def __init__(self, config: NGramConfig):
        super().__init__()
        self.config = config
        self.context_len = None
        self.order = config.order
        self.vocab_size = config.vocab_size
        self.width = config.vocab_size + 1  # the vocabulary and <s>
        self.bos_id = config.vocab_size
        uniform = np.full(self.width, -math.log(config.vocab_size))
        uniform[self.bos_id] = -np.inf
        higher = self.order - 1
        self.load_tables(BackoffTables(keys=[np.arange(self.width)] + [np.empty(0, np.int64)] * higher,
                                       log_prob=[uniform] + [np.empty(0)] * higher,
                                       log_backoff=[np.zeros(self.width)] + [np.empty(0)] * max(higher - 1, 0)))

    # --- tables ---------------------------------------------------------------------------------

    def load_tables(self, tables: BackoffTables) -> None:
        """Take `tables` as the model (stored as buffers: keys int64, log-probabilities float32)."""
        if len(tables.log_prob) != self.order or len(tables.log_prob[0]) != self.width:
            raise LmlabError(f"tables of order {len(tables.log_prob)} do not fit a model of order {self.order} "
                             f"with vocab_size {self.vocab_size}")
        for m in range(2, self.order + 1):
            sizes = {len(tables.keys[m - 1]), len(tables.log_prob[m - 1])}
            if len(sizes | ({len(tables.log_backoff[m - 1])} if m < self.order else set())) != 1:
                raise LmlabError(f"the order-{m} tables disagree in length; they are damaged")
        for m in range(1, self.order + 1):
            if m > 1:
                self.register_buffer(f"keys_{m}", torch.from_numpy(np.ascontiguousarray(tables.keys[m - 1], np.int64)))
            self.register_buffer(f"log_prob_{m}", torch.from_numpy(np.asarray(tables.log_prob[m - 1], np.float32)))
            if m < self.order:
                self.register_buffer(f"log_backoff_{m}", torch.from_numpy(np.asarray(tables.log_backoff[m - 1], np.float32)))

    def tables(self) -> BackoffTables:
        """The tables as numpy arrays (views of the buffers)."""
        def array(name: str) -> np.ndarray:
            return getattr(self, name).detach().cpu().numpy()
        return BackoffTables(
            keys=[np.arange(self.width)] + [array(f"keys_{m}") for m in range(2, self.order + 1)],
            log_prob=[array(f"log_prob_{m}") for m in range(1, self.order + 1)],
            log_backoff=[array(f"log_backoff_{m}") for m in range(1, self.order)])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Tables grow with the corpus: take the saved tensors as they are, not copied into the empty ones."""
        for name, current in list(self._buffers.items()):
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value = state_dict[key]
            if value.dtype != current.dtype or value.dim() != 1 or (name.endswith("_1") and len(value) != self.width):
                error_msgs.append(f"{key}: expected a 1-D {current.dtype} tensor" + (
                    f" of {self.width} entries" if name.endswith("_1") else "") + f", got {value.dtype} {tuple(value.shape)}")
                continue
            self._buffers[name] = value.detach().clone()
        for m in range(2, self.order + 1):
            names = [f"keys_{m}", f"log_prob_{m}"] + ([f"log_backoff_{m}"] if m < self.order else [])
            if len({len(self._buffers[name]) for name in names}) != 1:
                error_msgs.append(f"{prefix}{', '.join(names)} differ in length; the saved tables are damaged")
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in self._buffers)

    def num_parameters(self) -> int:
        """Stored probabilities (every vocabulary word, every n-gram above) plus back-off weights."""
        probabilities = self.vocab_size + sum(len(getattr(self, f"keys_{m}")) for m in range(2, self.order + 1))
        backoffs = sum(int(torch.count_nonzero(getattr(self, f"log_backoff_{m}"))) for m in range(1, self.order))
        return probabilities + backoffs

    def ngrams(self, order: int) -> np.ndarray:
        """The word ids (n, order) of every stored n-gram of `order`, in table order (<s> = vocab_size)."""
        keys = self.tables().keys
        words = keys[0][:, None]
        for m in range(2, order + 1):
            words = np.column_stack([words[keys[m - 1] // self.width], keys[m - 1] % self.width])
        return words

    # --- estimation -----------------------------------------------------------------------------

    def fit(self, token_ids: np.ndarray | torch.Tensor) -> "NGramLM":
        """Count and smooth the n-grams of a 1-D array of token ids (each <eos> ends a sentence;
        a last sentence without one is ended for it). Returns self."""
        if self.config.smoothing == FROM_ARPA:
            raise LmlabError(f"smoothing {FROM_ARPA!r} marks tables read from an ARPA file; to train, choose one of "
                             f"{', '.join(SMOOTHINGS)}")
        ids = self._check_ids(token_ids).reshape(-1)
        if ids.size == 0:
            raise LmlabError("no tokens to train the n-gram model on; give it some text")
        eos = self.config.eos_id
        if eos is not None and ids[-1] != eos:
            ids = np.append(ids, eos)
        stream, _ = sentence_stream(ids[None], eos, self.bos_id)
        counts = count_ngrams(stream, self.order, self.width)
        self.load_tables(SMOOTHINGS[self.config.smoothing](counts, float(self.config.k)))
        return self

    @classmethod
    def build(cls, token_ids: np.ndarray | torch.Tensor, config: NGramConfig) -> "NGramLM":
        return cls(config).fit(token_ids)

    # --- queries --------------------------------------------------------------------------------

    def _check_ids(self, ids: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise LmlabError(f"token ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise LmlabError(f"token id {bad} is out of range for this n-gram model (vocab_size {self.vocab_size})")
        return ids

    def _rows(self, stream: np.ndarray, top: int) -> list[np.ndarray]:
        """For m = 1..top: the table row of the m-gram that ends at each position of `stream`
        (R, L), or -1 where it is not stored (-1 in the stream is no token)."""
        keys = self.tables().keys
        rows = [np.where(stream >= 0, stream, -1)]
        for m in range(2, top + 1):
            left, right = rows[-1][:, :-1], stream[:, 1:]
            found = (left >= 0) & (right >= 0) & (right != self.bos_id)
            current = np.full(stream.shape, -1, np.int64)
            current[:, 1:][found] = lookup(keys[m - 1], left[found] * self.width + right[found])
            rows.append(current)
        return rows[:top]

    def token_log_probs(self, token_ids: np.ndarray | torch.Tensor) -> np.ndarray:
        """Natural-log probability of every token of a 1-D id array given the ones before it in
        its sentence (the first token follows <s>), as float64. Their sum over a text with an
        <eos> per line is the total log-likelihood of the usual n-gram perplexity."""
        ids = self._check_ids(token_ids).reshape(-1)
        stream, pos = sentence_stream(ids[None], self.config.eos_id, self.bos_id)
        rows = [r[0] for r in self._rows(stream[None], self.order)]
        at = pos[0]
        t = self.tables()
        context = [rows[j - 1][at - 1] for j in range(1, self.order)]  # j-gram before each token
        hit = [rows[m - 1][at] for m in range(1, self.order + 1)]  # m-gram ending at each token
        result = t.log_prob[0][ids].astype(np.float64)
        if self.config.smoothing in ADDITIVE:  # the longest context seen in training decides
            for j, c in enumerate(context, 1):
                backoff = _stored(t.log_backoff[j - 1], c)
                stored = np.where(hit[j] >= 0, _stored(t.log_prob[j], hit[j]), backoff - math.log(self.vocab_size))
                result = np.where(backoff != 0, stored, result)
            return result
        backoffs = np.stack([_stored(t.log_backoff[j - 1], c) for j, c in enumerate(context, 1)]
                            + [np.zeros(len(ids))])  # (order, T); the last row: the top order has none
        tail = np.cumsum(backoffs[::-1], axis=0)[::-1]  # tail[m-1] = sum of back-offs of contexts >= m words
        result += tail[0]
        for m in range(2, self.order + 1):  # the longest stored n-gram, then every longer context's back-off
            result = np.where(hit[m - 1] >= 0, _stored(t.log_prob[m - 1], hit[m - 1]) + tail[m - 1], result)
        return result

    def log_prob(self, word: int, context: list[int] | tuple[int, ...] = ()) -> float:
        """log P(word | context): the context is the text so far, from a sentence start."""
        return float(self.token_log_probs(np.array([*context, word]))[-1])

    def _next_log_probs(self, contexts: list[np.ndarray], R: int) -> np.ndarray:
        """(R, V) log-probabilities of the next token from contexts[j-1] (R,) = the row of the last
        j tokens in the order-j table (or -1), for j = 1..order-1."""
        t, V, W = self.tables(), self.vocab_size, self.width
        out = np.repeat(t.log_prob[0][None, :V], R, axis=0)  # (R, V)
        for m in range(2, self.order + 1):
            rows = np.flatnonzero(contexts[m - 2] >= 0)
            context = contexts[m - 2][rows]
            backoff = t.log_backoff[m - 2][context]
            if self.config.smoothing in ADDITIVE:  # a seen context: its stored words over uniform rest
                seen = backoff != 0
                rows, context, backoff = rows[seen], context[seen], backoff[seen]
                out[rows] = (backoff - math.log(V))[:, None]
            else:  # unseen words keep the shorter context's probability times the back-off weight
                out[rows] += backoff[:, None]
            keys = t.keys[m - 1]
            start = np.searchsorted(keys, context * W)
            n = np.searchsorted(keys, context * W + W) - start  # the context's stored continuations
            entry = np.repeat(start - np.cumsum(n) + n, n) + np.arange(n.sum())
            out[np.repeat(rows, n), keys[entry] % W] = t.log_prob[m - 1][entry]
        return out

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced: ids (B, T) -> log-probabilities (B, T, V) of the next token after every
        position (each row starts a sentence), and the mean cross-entropy if targets are given."""
        x = self._check_ids(ids)
        B, T = x.shape
        stream, pos = sentence_stream(x, self.config.eos_id, self.bos_id)
        if self.config.eos_id is not None:
            pos = pos + (x == self.config.eos_id)  # after an <eos> the context is the next <s>
        rows = self._rows(stream[None], self.order - 1)
        logits = self._next_log_probs([r[0, pos.reshape(-1)] for r in rows], B * T)  # (B * T, V)
        logits = torch.from_numpy(logits).view(B, T, self.vocab_size).to(ids.device)
        if targets is None:
            return logits, None
        return logits, lm_loss(logits, targets)

    def _start_state(self, batch_size: int) -> np.ndarray:
        history = np.full((batch_size, self.order - 1), -1, np.int64)  # (B, order - 1)
        history[:, -1:] = self.bos_id
        return history

    def step(self, ids: torch.Tensor, state: torch.Tensor | None = None, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Incremental: feed new ids (B, T_new); return the next token's log-probabilities (B, V)
        and the state: the last order-1 ids (B, order-1), -1 before the sentence start and
        vocab_size for <s> (None starts a text). `mask` (B, T_new) is 0 at left padding."""
        x = self._check_ids(ids)
        history = self._start_state(x.shape[0]) if state is None else state.detach().cpu().numpy().copy()
        active = np.ones(x.shape, bool) if mask is None else mask.detach().cpu().numpy().astype(bool)
        for t in range(x.shape[1] if self.order > 1 else 0):
            pushed = np.concatenate([history[:, 1:], x[:, t : t + 1]], axis=1)
            if self.config.eos_id is not None:
                ended = x[:, t] == self.config.eos_id
                pushed[ended] = self._start_state(int(ended.sum()))
            history = np.where(active[:, t : t + 1], pushed, history)
        rows = self._rows(history, self.order - 1)
        logits = self._next_log_probs([r[:, -1] for r in rows], x.shape[0])
        return torch.from_numpy(logits).to(ids.device), torch.from_numpy(history).to(ids.device)

    def reorder(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return state.index_select(0, index.to(state.device))
