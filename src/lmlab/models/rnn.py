"""Recurrent language models: a vanilla (tanh) RNN, an LSTM or a GRU stack over word embeddings.

Read top to bottom: the config, the cell wrappers (nn.RNN / nn.GRU / nn.LSTM behind one state
interface), the LM. The network is Zaremba et al. 2014, "Recurrent Neural Network Regularization":
embeddings -> dropout -> stacked cells with dropout between layers -> dropout -> softmax layer,
every weight initialised uniform(-init_scale, init_scale).

The state is a tuple of (layers, B, hidden) tensors: (h,) for rnn and gru, (h, c) for lstm; None
means all zeros. Beyond the contract, `forward_with_state` continues from the state a previous
window ended in and returns the new one: the trainer carries it across consecutive batches
(truncated BPTT, lmlab/train) and evaluation across consecutive windows (lmlab/evaluate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.base import ReadInOrder, softmax_layer
from lmlab.models.config import ModelConfig

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class RNNConfig(ModelConfig):
    vocab_size: int
    cell: str = "lstm"  # key of CELLS; the model families "rnn", "lstm" and "gru" fix it
    d_embed: int = 200
    hidden: int = 200
    layers: int = 2
    dropout: float = 0.0  # on the embeddings, between layers and before the softmax layer
    tie_embeddings: bool = False  # the softmax layer reuses the embedding matrix (needs d_embed == hidden)
    init_scale: float = 0.1  # every weight starts uniform(-init_scale, init_scale)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_embed", "hidden", "layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LmlabError(f"{name} must be a positive integer, got {value!r}")
        if self.cell not in CELLS:
            raise LmlabError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LmlabError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.init_scale > 0:
            raise LmlabError(f"init_scale must be positive, got {self.init_scale}")
        if self.tie_embeddings and self.d_embed != self.hidden:
            raise LmlabError(f"tie_embeddings needs d_embed == hidden (got d_embed={self.d_embed}, "
                             f"hidden={self.hidden}); make them equal or turn tie_embeddings off")


class Cells(nn.Module):
    """A stack of `layers` recurrent cells (one fused nn.RNN / nn.GRU / nn.LSTM, batch first) whose
    state is always a tuple of (layers, B, hidden) tensors."""

    def __init__(self, make: type[nn.Module], n_states: int, config: RNNConfig, **options: Any):
        super().__init__()
        self.n_states = n_states
        self.shape = (config.layers, config.hidden)
        self.net = make(config.d_embed, config.hidden, num_layers=config.layers, batch_first=True,
                        dropout=config.dropout if config.layers > 1 else 0.0, **options)

    def initial_state(self, batch_size: int, like: torch.Tensor) -> State:
        layers, hidden = self.shape
        return tuple(like.new_zeros(layers, batch_size, hidden) for _ in range(self.n_states))

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (B, T, d_embed) -> outputs of the top layer (B, T, hidden) and the new state."""
        out, new = self.net(x, state if self.n_states > 1 else state[0])
        return out, (new if self.n_states > 1 else (new,))


def tanh_cells(config: RNNConfig) -> Cells:
    return Cells(nn.RNN, 1, config, nonlinearity="tanh")


def gru_cells(config: RNNConfig) -> Cells:
    return Cells(nn.GRU, 1, config)


def lstm_cells(config: RNNConfig) -> Cells:
    return Cells(nn.LSTM, 2, config)


CELLS = {"rnn": tanh_cells, "lstm": lstm_cells, "gru": gru_cells}


class RNNLM(ReadInOrder, nn.Module):
    """Embeddings -> recurrent cells -> softmax layer. `family` is the cell name: rnn, lstm or gru."""

    config_class = RNNConfig

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.context_len = None  # the state summarises the whole prefix
        self.embed = nn.Embedding(config.vocab_size, config.d_embed)
        self.drop = nn.Dropout(config.dropout)
        self.cells = CELLS[config.cell](config)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -config.init_scale, config.init_scale)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    @property
    def family(self) -> str:
        return self.config.cell

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward_with_state(self, ids: torch.Tensor, targets: torch.Tensor | None = None, state: State | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """ids (B, T) after `state` -> logits (B, T, V), the mean cross-entropy over targets that are
        not -1 (if targets are given), and the state after the last position."""
        if state is None:
            state = self.cells.initial_state(ids.size(0), self.embed.weight)
        x = self.drop(self.embed(ids))  # (B, T, d_embed)
        out, state = self.cells(x, state)  # (B, T, hidden)
        if targets is None:
            return self.head(self.drop(out)), None, state  # (B, T, V)
        logits, loss = softmax_layer(self.drop(out), self.head, targets)
        return logits, loss, state

    def step(self, ids: torch.Tensor, state: State | None = None, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, State]:
        """Feed new ids (B, T_new) after `state`; return logits (B, V) of the last position and the state.

        `mask` (B, T_new), 0 at padding: a padded position leaves its row's state as it was, so a
        left-padded row ends where it would alone. Columns up to the last one that holds padding
        run one at a time; the rest run as one call.
        """
        if state is None:
            state = self.cells.initial_state(ids.size(0), self.embed.weight)
        x = self.drop(self.embed(ids))  # (B, T, d_embed)
        padded = 0  # columns up to the last one that holds padding
        if mask is not None and not bool(mask.all()):
            padded = int((~mask.bool()).any(0).nonzero()[-1]) + 1
        for t in range(padded):
            _, new = self.cells(x[:, t: t + 1], state)
            keep = mask[:, t].bool()[None, :, None]  # (1, B, 1)
            state = tuple(torch.where(keep, n, old) for n, old in zip(new, state))
        if padded < ids.size(1):
            out, state = self.cells(x[:, padded:], state)  # (B, T', hidden)
            last = out[:, -1]
        else:  # the last column held padding too: the top layer's state is the last output
            last = state[0][-1]
        return self.head(self.drop(last)), state  # (B, V)

    def reorder(self, state: State, index: torch.Tensor) -> State:
        return tuple(t.index_select(1, index) for t in state)
