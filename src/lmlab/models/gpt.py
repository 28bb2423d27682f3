"""GPT: a decoder-only transformer language model, readable in one sitting.

Token embedding + positional encoding (learned, or sinusoidal as in "Attention Is All You Need"),
pre-LayerNorm blocks of multi-head causal self-attention and a GELU feed-forward with residuals,
a final LayerNorm, and an LM head tied to the token embedding.

The incremental contract (`step`, `reorder`) runs on a preallocated KV cache. The pieces
(attention, masks, the cache, norms, positions, the MLP, the block) are models/layers.py's, shared
with the other attention families; this file only composes them. What is not here: training
(lmlab/train), decoding strategies (lmlab/generate), checkpoint files (lmlab/io).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.base import softmax_layer
from lmlab.models.config import ModelConfig
from lmlab.models.layers import (ACTIVATIONS, ATTENTION, MLP, NORMS, POSITIONS, Attention, Block, KVCache,
                                 LearnedPositions, positions_and_mask)


@dataclass(frozen=True)
class GPTConfig(ModelConfig):
    vocab_size: int
    context_len: int = 256
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True
    positional: str = "learned"  # key of POSITIONS
    activation: str = "gelu"  # key of ACTIVATIONS
    norm_eps: float = 1e-5
    attention: str = "sdpa"  # key of ATTENTION: "manual" writes the math out, "sdpa" calls the fused kernel

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_len", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LmlabError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise LmlabError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise LmlabError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, table in (("positional", POSITIONS), ("activation", ACTIVATIONS), ("attention", ATTENTION)):
            if getattr(self, name) not in table:
                raise LmlabError(f"{name} must be one of {', '.join(table)}, got {getattr(self, name)!r}")


def gpt_block(config: GPTConfig, layer: int) -> Block:
    """Layer `layer` of a GPT: pre-LayerNorm causal multi-head self-attention and a 4x MLP."""
    C = config.d_model
    attn = Attention(C, config.n_head, bias=config.bias, dropout=config.dropout, attention=config.attention,
                     layer=layer)
    mlp = MLP(C, 4 * C, activation=config.activation, bias=config.bias, dropout=config.dropout)
    norm = functools.partial(NORMS["layernorm"], C, eps=config.norm_eps, bias=config.bias)
    return Block(attn, mlp, norm)


class GPT(nn.Module):
    family = "gpt"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.context_len = config.context_len
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = POSITIONS[config.positional](config.context_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(gpt_block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # residual projections, scaled by depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, LearnedPositions)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _run(self, ids: torch.Tensor, cache: KVCache | None, padding_mask: torch.Tensor | None = None,
             need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.context_len:
            raise LmlabError(f"sequence of {start + T} tokens exceeds context_len {self.context_len}")
        positions, mask = positions_and_mask(ids, cache, padding_mask)  # (T,) or (B, T); None or (B, 1, T, Tk)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))  # (B, T, C)
        maps = []
        for block in self.blocks:
            x, block_maps = block(x, mask, cache, need_weights=need_weights)
            maps += block_maps
        if cache is not None:
            cache.length += T
        return self.ln_f(x), maps

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced: ids (B, T) -> logits (B, T, V), and the mean cross-entropy if targets are given."""
        hidden, _ = self._run(ids, None)
        if targets is None:
            return self.lm_head(hidden), None  # (B, T, V)
        return softmax_layer(hidden, self.lm_head, targets)

    def attention_weights(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for ids (B, T): a list of (B, n_head, T, T)."""
        _, maps = self._run(ids, None, need_weights=True)
        return maps

    def step(self, ids: torch.Tensor, state: KVCache | None = None,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        """Incremental: feed new ids (B, T_new); return logits (B, V) of the last position and the cache.

        `mask` (B, T_new), 0 at padding, lets one batch hold left-padded prompts of unequal length.
        """
        if state is None:
            config = self.config
            state = KVCache(config.n_layer, ids.size(0), config.n_head, config.d_model // config.n_head,
                            config.context_len, self.tok_emb.weight.dtype, ids.device)
        hidden, _ = self._run(ids, state, mask)
        return self.lm_head(hidden[:, -1]), state  # (B, V)

    def reorder(self, state: KVCache, index: torch.Tensor) -> KVCache:
        return state.reorder(index)
