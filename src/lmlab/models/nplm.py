"""Fixed-window neural language model: Bengio, Ducharme, Vincent and Jauvin 2003.

The n-1 tokens before a position (n = `order`) are looked up in one shared embedding table and
concatenated, x = [C(w_t-n+1); ...; C(w_t-1)], and the next token's logits are

    y = b + W x + U tanh(d + H x)

where the direct connections W x (embeddings straight to the output) are there only with
`direct=True`. Dropout, when set, applies to x and to the tanh layer.

Positions before the start of the text hold no token: their embedding is the zero vector (id -1 in
the history). So `forward` over a window (B, T) with no state predicts the window's first n-2
tokens from a zero-padded context. `forward_with_state` and `step` carry the last n-1 ids across
calls, so a text cut into consecutive windows scores exactly as the whole text; that is why
`context_len` is None and the trainer feeds this model consecutive batches like an RNN.
Training is lmlab/train; the n-gram model (counts, no network) is ngram.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.base import ReadInOrder, lm_loss, softmax_layer
from lmlab.models.config import ModelConfig

NO_TOKEN = -1  # a history slot before the start of the text
State = tuple[torch.Tensor]  # (history,): the last order-1 ids, (B, order-1), NO_TOKEN where none


@dataclass(frozen=True)
class NPLMConfig(ModelConfig):
    vocab_size: int
    order: int = 5  # n: the model sees the n-1 previous tokens
    d_embed: int = 60
    hidden: int = 100
    direct: bool = False  # direct connections from the embeddings to the output
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_embed", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LmlabError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.order, int) or isinstance(self.order, bool) or self.order < 2:
            raise LmlabError(f"order must be an integer >= 2 (the model sees order-1 previous tokens), "
                             f"got {self.order!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LmlabError(f"dropout must be in [0, 1), got {self.dropout}")


def append_ids(history: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """history (B, H) followed by ids (B, T), with the positions `mask` marks 0 taken out: each row
    is right-aligned and filled with NO_TOKEN on the left.

    >>> append_ids(torch.tensor([[1, 2]]), torch.tensor([[0, 3]]), torch.tensor([[0, 1]])).tolist()
    [[-1, 1, 2, 3]]
    """
    full = torch.cat([history, ids], dim=1)  # (B, H + T)
    if mask is None:
        return full
    keep = torch.cat([torch.ones_like(history, dtype=torch.bool), mask.bool()], dim=1)
    order = torch.sort(keep.long(), dim=1, stable=True).indices  # dropped first, kept ones in order
    return torch.where(keep.gather(1, order), full.gather(1, order), NO_TOKEN)


class NPLM(ReadInOrder, nn.Module):
    family = "nplm"
    config_class = NPLMConfig

    def __init__(self, config: NPLMConfig):
        super().__init__()
        self.config = config
        self.context_len = None
        self.window = config.order - 1
        self.embed = nn.Embedding(config.vocab_size, config.d_embed)  # C
        width = self.window * config.d_embed
        self.hidden = nn.Linear(width, config.hidden)  # H, d
        self.out = nn.Linear(config.hidden, config.vocab_size)  # U, b
        self.direct = nn.Linear(width, config.vocab_size, bias=False) if config.direct else None  # W
        self.drop = nn.Dropout(config.dropout)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        if self.direct is not None:
            nn.init.zeros_(self.direct.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def empty_history(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch_size, self.window), NO_TOKEN, dtype=torch.long, device=device)

    def _layers(self, contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """contexts (..., n-1) of ids (NO_TOKEN allowed) -> x, the concatenated embeddings
        (..., (n-1) * d_embed), and the tanh layer that feeds the softmax layer (..., hidden)."""
        present = (contexts != NO_TOKEN).unsqueeze(-1)  # (..., n-1, 1)
        e = self.embed(contexts.clamp(min=0)) * present.to(self.embed.weight.dtype)  # (..., n-1, d_embed)
        x = self.drop(e.flatten(-2))
        return x, self.drop(torch.tanh(self.hidden(x)))

    def logits_of(self, contexts: torch.Tensor) -> torch.Tensor:
        """contexts (..., n-1) of ids (NO_TOKEN allowed) -> next-token logits (..., V)."""
        x, h = self._layers(contexts)
        y = self.out(h)  # (..., V)
        return y + self.direct(x) if self.direct is not None else y

    def forward_with_state(self, ids: torch.Tensor, targets: torch.Tensor | None = None, state: State | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """ids (B, T) after `state` -> logits (B, T, V), the mean cross-entropy over targets that are
        not -1 (if targets are given), and the state after the last position."""
        history = self.empty_history(ids.size(0), ids.device) if state is None else state[0]
        full = torch.cat([history, ids], dim=1)  # (B, n-1 + T)
        contexts = full.unfold(1, self.window, 1)[:, 1:]  # (B, T, n-1): the n-1 ids ending at each position
        new_state = (full[:, -self.window:],)
        if targets is None:
            return self.logits_of(contexts), None, new_state  # (B, T, V)
        if self.direct is None:
            logits, loss = softmax_layer(self._layers(contexts)[1], self.out, targets)
            return logits, loss, new_state
        logits = self.logits_of(contexts)
        return logits, lm_loss(logits, targets), new_state

    def step(self, ids: torch.Tensor, state: State | None = None, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, State]:
        """Feed new ids (B, T_new); return logits (B, V) after each row's last real token and the state.

        `mask` (B, T_new), 0 at padding: padded positions never enter a row's history.
        """
        history = self.empty_history(ids.size(0), ids.device) if state is None else state[0]
        history = append_ids(history, ids, mask)[:, -self.window:]  # (B, n-1)
        return self.logits_of(history), (history,)  # (B, V)

    def reorder(self, state: State, index: torch.Tensor) -> State:
        return (state[0].index_select(0, index),)
