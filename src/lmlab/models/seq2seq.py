"""Seq2seq: a recurrent encoder-decoder for translation, with or without attention.

The encoder (GRU or LSTM, optionally bidirectional) reads the source; the decoder starts from its
final state and writes the target token by token. With `attention="none"` that final state is the
only thing the decoder knows of the source: one fixed-size context vector, the bottleneck. With an
attention score (`SCORES`: dot, general, additive, scaled-dot), every decoder output looks back at
every encoder output: the scores go through a softmax over the real source positions (padding
gets exactly 0), the weighted sum of encoder outputs is the context, and tanh(W [output; context])
is what the softmax layer reads (Luong et al. 2015's placement: attention after the decoder cell,
so a teacher-forced pass runs the cell over the whole target at once).

The conditional contract (DESIGN.md): `encode(source, source_mask)` returns the state every
decoding step starts from (encoder outputs, their mask, the decoder's initial hidden state);
`step(ids, state, mask)` and `reorder(state, index)` carry it. `forward(ids, targets, source=...)`
is teacher forced, or with `teacher_forcing < 1` feeds the decoder its own best guess at that rate
while training. Training, decoding and files live elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmlab.errors import LmlabError
from lmlab.models.base import lm_loss
from lmlab.models.config import ModelConfig

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


# --- attention scores ---------------------------------------------------------------------------


def dot_scores(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """q . k for every query (B, T, H) and key (B, S, H): (B, T, S).

    >>> dot_scores(torch.tensor([[[0.5], [1.0]]]), torch.tensor([[[0.5], [2.0]]])).tolist()
    [[[0.25, 1.0], [0.5, 2.0]]]
    """
    return queries @ keys.transpose(1, 2)


def attend(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax of scores (B, T, S) over the source positions that `mask` (B, S) marks real (the
    others weigh exactly 0), and the weighted sum of values (B, S, H): (context (B, T, H), weights).

    >>> context, weights = attend(torch.tensor([[[0.2, 0.4]]]), torch.tensor([[[0.6], [0.9]]]))
    >>> [round(w, 2) for w in weights[0, 0].tolist()], round(context.item(), 3)
    ([0.45, 0.55], 0.765)
    """
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    weights = scores.softmax(dim=-1)  # (B, T, S)
    return weights @ values, weights  # (B, T, H)


class DotScore(nn.Module):
    """score(q, k) = q . k (Luong's dot)."""

    def __init__(self, width: int):
        super().__init__()

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return dot_scores(queries, keys)


class ScaledDotScore(DotScore):
    """score(q, k) = q . k / sqrt(H) (the Transformer's scaling, on one head)."""

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return dot_scores(queries, keys) / math.sqrt(queries.size(-1))


class GeneralScore(nn.Module):
    """score(q, k) = q . (W k) (Luong's general)."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Linear(width, width, bias=False)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return dot_scores(queries, self.weight(keys))


class AdditiveScore(nn.Module):
    """score(q, k) = v . tanh(W_q q + W_k k) (Bahdanau et al. 2015's additive / concat score)."""

    def __init__(self, width: int):
        super().__init__()
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(width, width, bias=True)
        self.v = nn.Linear(width, 1, bias=False)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        mixed = torch.tanh(self.query(queries)[:, :, None, :] + self.key(keys)[:, None, :, :])  # (B, T, S, H)
        return self.v(mixed).squeeze(-1)  # (B, T, S)


SCORES = {"dot": DotScore, "general": GeneralScore, "additive": AdditiveScore, "scaled-dot": ScaledDotScore}
ATTENTION_CHOICES = ("none", *SCORES)


# --- the network --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seq2SeqConfig(ModelConfig):
    vocab_size: int  # the target's vocabulary
    source_vocab_size: int | None = field(default=None, metadata={"cli": False})  # None: the source shares the target's vocabulary and embedding
    cell: str = "gru"  # key of CELLS
    d_embed: int = 256
    hidden: int = 256
    layers: int = 1
    bidirectional: bool = False
    attention: str = "additive"  # "none" or a key of SCORES
    dropout: float = 0.1
    teacher_forcing: float = 1.0  # share of training steps fed the true previous token
    context_len: int = 128  # longest target, in tokens
    max_source_len: int = 128  # longest source, in tokens

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_embed", "hidden", "layers", "context_len", "max_source_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LmlabError(f"{name} must be a positive integer, got {value!r}", params=(name,))
        if self.source_vocab_size is not None and (not isinstance(self.source_vocab_size, int)
                                                   or self.source_vocab_size < 1):
            raise LmlabError(f"source_vocab_size must be a positive integer or None, got {self.source_vocab_size!r}")
        if self.cell not in CELLS:
            raise LmlabError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}", params=("cell",))
        if self.attention not in ATTENTION_CHOICES:
            raise LmlabError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, got {self.attention!r}",
                             params=("attention",))
        if not 0.0 <= self.dropout < 1.0:
            raise LmlabError(f"dropout must be in [0, 1), got {self.dropout}", params=("dropout",))
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise LmlabError(f"teacher_forcing must be in [0, 1], got {self.teacher_forcing}",
                             params=("teacher_forcing",))


@dataclass(frozen=True)
class Seq2SeqState:
    """What a decoding step carries: the encoder outputs (B, S, H) and their mask (B, S), and the
    decoder's hidden state, a tuple of (layers, B, H) tensors (GRU: h; LSTM: h, c)."""

    memory: torch.Tensor
    memory_mask: torch.Tensor
    hidden: tuple[torch.Tensor, ...]


class Seq2Seq(nn.Module):
    family = "seq2seq"
    config_class = Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        self.context_len = config.context_len
        self.max_source_len = config.max_source_len
        H, E = config.hidden, config.d_embed
        self.tgt_emb = nn.Embedding(config.vocab_size, E)
        self.src_emb = self.tgt_emb if config.source_vocab_size is None else nn.Embedding(config.source_vocab_size, E)
        rnn_dropout = config.dropout if config.layers > 1 else 0.0
        cell = CELLS[config.cell]
        self.encoder = cell(E, H, config.layers, batch_first=True, dropout=rnn_dropout,
                            bidirectional=config.bidirectional)
        self.decoder = cell(E, H, config.layers, batch_first=True, dropout=rnn_dropout)
        if config.bidirectional:  # both directions joined, back to the decoder's width
            self.bridge = nn.Linear(2 * H, H)
            self.memory_proj = nn.Linear(2 * H, H)
        self.score = None if config.attention == "none" else SCORES[config.attention](H)
        if self.score is not None:
            self.combine = nn.Linear(2 * H, H)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, config.vocab_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> Seq2SeqState:
        """Read right-padded sources (B, S) (`source_mask` False at padding) into the decoder's start state."""
        B, S = source.shape
        if S > self.max_source_len:
            raise LmlabError(f"a source of {S} tokens is longer than the model's max_source_len "
                             f"{self.max_source_len}", params=("max_source_len",))
        if source_mask is None:
            source_mask = torch.ones(B, S, dtype=torch.bool, device=source.device)
        lengths = source_mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.drop(self.src_emb(source)), lengths, batch_first=True, enforce_sorted=False)
        outputs, final = self.encoder(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=S)  # (B, S, dirs * H)
        final = final if isinstance(final, tuple) else (final,)  # each (layers * dirs, B, H)
        if self.config.bidirectional:
            L, H = self.config.layers, self.config.hidden
            final = tuple(torch.tanh(self.bridge(f.view(L, 2, B, H).transpose(1, 2).reshape(L, B, 2 * H)))
                          for f in final)  # (layers, B, H)
            outputs = self.memory_proj(outputs)  # (B, S, H)
        return Seq2SeqState(outputs, source_mask, final)

    def _decode(self, ids: torch.Tensor, state: Seq2SeqState, hidden: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        """ids (B, T) from `hidden` -> (what the softmax layer reads (B, T, H), the new hidden, attention (B, T, S))."""
        outputs, new = self.decoder(self.drop(self.tgt_emb(ids)), hidden if len(hidden) > 1 else hidden[0])
        new = new if isinstance(new, tuple) else (new,)
        if self.score is None:
            return self.drop(outputs), new, None
        context, weights = attend(self.score(outputs, state.memory), state.memory, state.memory_mask)
        combined = torch.tanh(self.combine(torch.cat([outputs, context], dim=-1)))  # (B, T, H)
        return self.drop(combined), new, weights

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, *, source: torch.Tensor,
                source_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target inputs ids (B, T) given sources (B, S) -> logits (B, T, V), and the mean
        cross-entropy against targets (-1 skipped) when given."""
        state = self.encode(source, source_mask)
        if self.training and self.config.teacher_forcing < 1.0:
            logits = self._partly_forced(ids, state)
        else:
            hidden, _, _ = self._decode(ids, state, state.hidden)
            logits = self.head(hidden)  # (B, T, V)
        return logits, None if targets is None else lm_loss(logits, targets)

    def _partly_forced(self, ids: torch.Tensor, state: Seq2SeqState) -> torch.Tensor:
        """Token by token; each row takes the true previous token with probability teacher_forcing,
        else the decoder's own best guess (the global RNG draws, so a resumed run draws the same)."""
        hidden, steps, token = state.hidden, [], ids[:, :1]
        for t in range(ids.size(1)):
            if t > 0:
                forced = torch.rand(ids.size(0), 1, device=ids.device) < self.config.teacher_forcing
                token = torch.where(forced, ids[:, t:t + 1], steps[-1].argmax(-1).detach())
            out, hidden, _ = self._decode(token, state, hidden)
            steps.append(self.head(out))  # (B, 1, V)
        return torch.cat(steps, dim=1)

    def attention_weights(self, ids: torch.Tensor, *, source: torch.Tensor,
                          source_mask: torch.Tensor | None = None) -> dict[str, list[torch.Tensor]]:
        """{"cross": [(B, 1, T, S)]}: how much each target position looked at each source position
        (empty for attention "none")."""
        state = self.encode(source, source_mask)
        _, _, weights = self._decode(ids, state, state.hidden)
        return {"cross": [] if weights is None else [weights[:, None]]}

    def step(self, ids: torch.Tensor, state: Seq2SeqState, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, Seq2SeqState]:
        """Feed new target ids (B, T_new) from `state` (from `encode`, or a step): logits (B, V) of
        the last position and the next state. A position whose `mask` is 0 (left padding) leaves
        its row's hidden state as it was."""
        if not isinstance(state, Seq2SeqState):
            raise LmlabError("a seq2seq model decodes from the state model.encode(source) returns; got "
                             f"{type(state).__name__}")
        if mask is None or bool(mask.all()):
            out, hidden, _ = self._decode(ids, state, state.hidden)
            return self.head(out[:, -1]), Seq2SeqState(state.memory, state.memory_mask, hidden)
        hidden, last = state.hidden, None
        for t in range(ids.size(1)):
            out, new, _ = self._decode(ids[:, t:t + 1], state, hidden)
            keep = mask[:, t].bool()
            hidden = tuple(torch.where(keep[None, :, None], n, h) for n, h in zip(new, hidden))
            last = out[:, 0] if last is None else torch.where(keep[:, None], out[:, 0], last)
        return self.head(last), Seq2SeqState(state.memory, state.memory_mask, hidden)

    def reorder(self, state: Seq2SeqState, index: torch.Tensor) -> Seq2SeqState:
        return Seq2SeqState(state.memory.index_select(0, index), state.memory_mask.index_select(0, index),
                            tuple(h.index_select(1, index) for h in state.hidden))
