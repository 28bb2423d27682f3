"""Scoring text: mean loss, perplexity and bits per byte over non-overlapping context windows.

Families that train on streams (models/registry.py: nplm, rnn, lstm, gru) are scored in order instead, carrying
their state from one window to the next, so each token is predicted from everything before it:
with one row, the standard way PTB perplexities are computed.

Bits per byte (total negative log2-likelihood / UTF-8 bytes) is the scale on which models with
different tokenizers compare fairly. BLEU, zero-shot tasks and `compare` arrive with later issues.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from lmlab.data import TokenStream
from lmlab.errors import LmlabError
from lmlab.models import device_of, family_of


@dataclass(frozen=True)
class Perplexity:
    loss: float  # mean negative log-likelihood per token, in nats
    perplexity: float
    bits_per_byte: float
    tokens: int  # tokens predicted
    bytes: int  # UTF-8 bytes of those tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SEQUENTIAL_CHUNK = 256  # tokens per forward call when a recurrent model is scored in order


@torch.no_grad()
def sequential_nll(model: nn.Module, stream: TokenStream, rows: int = 1, chunk: int = SEQUENTIAL_CHUNK,
                   max_batches: int | None = None, bf16: bool = False) -> tuple[float, int]:
    """Summed NLL (nats) and tokens predicted by a recurrent model reading `stream` in order.

    The stream is cut into `rows` contiguous rows (`TokenStream.sequential_batches`) read `chunk`
    tokens at a time, the state carried from chunk to chunk: each token after the first is
    predicted once, from everything before it in its row. The chunk length changes only speed.
    """
    was_training = model.training
    model.eval()
    device = device_of(model)
    total, count, state = 0.0, 0, None
    for i, (x, y) in enumerate(stream.sequential_batches(rows, chunk)):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, loss, state = model.forward_with_state(x, y, state)
        n = int((y >= 0).sum())
        total += loss.item() * n
        count += n
    model.train(was_training)
    return total, count


@torch.no_grad()
def total_nll(model: nn.Module, stream: TokenStream, context_len: int | None, batch_size: int = 16,
              max_batches: int | None = None, bf16: bool = False) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (nats) and the number of tokens predicted.

    Windows do not overlap: each token after the first is predicted once, from the tokens before
    it in its window. A recurrent model is read in order instead (`sequential_nll`, with
    `batch_size` rows and `context_len` tokens per chunk).
    """
    reads = family_of(model).trains_on
    if reads == "counts":  # count-based models score a whole stream at once
        log_probs = model.token_log_probs(stream.tokens)
        return -float(log_probs.sum()), len(log_probs)
    if reads == "pairs":  # `stream` is a PairData: targets scored given their sources
        from lmlab.evaluate.pairs import pairs_nll

        return pairs_nll(model, stream, batch_size, max_batches, bf16)
    if reads == "streams":
        return sequential_nll(model, stream, batch_size, context_len or SEQUENTIAL_CHUNK, max_batches, bf16)
    was_training = model.training
    model.eval()
    device = device_of(model)
    total, count = 0.0, 0
    for i, (x, y) in enumerate(stream.windows(context_len, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total, count


def mean_loss(model: nn.Module, stream: TokenStream, context_len: int | None, batch_size: int = 16,
              max_batches: int | None = None, bf16: bool = False) -> float:
    total, count = total_nll(model, stream, context_len, batch_size, max_batches, bf16)
    return total / max(count, 1)


def summarize(nll: float, tokens: int, n_bytes: int) -> Perplexity:
    """Turn a summed NLL (nats) into the reported figures.

    >>> summarize(nll=2 * math.log(2), tokens=2, n_bytes=4)
    Perplexity(loss=0.693147..., perplexity=2.0, bits_per_byte=0.5, tokens=2, bytes=4)
    """
    loss = nll / max(tokens, 1)
    return Perplexity(loss=loss, perplexity=math.exp(min(loss, 700.0)),
                      bits_per_byte=nll / math.log(2) / max(n_bytes, 1), tokens=tokens, bytes=n_bytes)


def perplexity(model: nn.Module, tokenizer: Any, text: str | None = None, *, stream: TokenStream | None = None,
               text_bytes: int | None = None, batch_size: int | None = None) -> Perplexity:
    """Evaluate `model` on `text` (or on an already tokenized `stream` whose text had `text_bytes`).

    `batch_size` is windows per batch (default 16), or for a recurrent model the number of rows the
    text is cut into (default 1: every token predicted from the whole text before it).
    """
    if batch_size is None:
        batch_size = 1 if family_of(model).trains_on == "streams" else 16
    if stream is None:
        stream = TokenStream(tokenizer.encode_array(text))
        text_bytes = len(text.encode("utf-8"))
    if len(stream) < 2:
        raise LmlabError("the evaluation text has fewer than 2 tokens; give it more text")
    nll, tokens = total_nll(model, stream, model.context_len, batch_size)
    # Most models cannot predict the first token (nothing comes before it): its bytes are not scored,
    # unless it is an unknown token (<unk>, U+FFFD) whose text cannot be told: then every byte counts.
    first = b"" if tokens == len(stream) else tokenizer.decode_bytes([int(stream.tokens[0])])
    if text is not None and not text.encode("utf-8").startswith(first):
        first = b""
    return summarize(nll, tokens, max(int(text_bytes) - len(first), 1))
