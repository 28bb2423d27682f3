"""Llama: a decoder-only transformer with RMSNorm, rotary positions, grouped-query attention and a
SwiGLU feed-forward (Touvron et al. 2023; SmolLM2, TinyLlama and Llama 3 are this network).

Token embedding, pre-norm blocks (RMSNorm -> causal self-attention with n_kv_head key/value heads
whose queries and keys turn by RoPE -> residual; RMSNorm -> SwiGLU -> residual), a final
RMSNorm, and an LM head that is tied to the embedding or not. No position embedding is added:
positions live only in the rotation, so a left-padded row counts its own positions.

The pieces are models/layers.py's, shared with GPT; this file composes them. `step` runs on a KV
cache that grows as it fills (a context of 8,192 positions is not held from the first token).
What is not here: reading GGUF or Hugging Face files (lmlab/io), decoding (lmlab/generate).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.base import softmax_layer
from lmlab.models.config import ModelConfig
from lmlab.models.layers import (ATTENTION, ROPE_SCALING, Attention, Block, KVCache, RMSNorm, RotaryPositions,
                                 SwiGLU, positions_and_mask)

FIRST_CACHE_POSITIONS = 256  # a new cache holds this many positions (or the prompt) and grows as needed


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    vocab_size: int
    context_len: int = 2048  # Hugging Face's max_position_embeddings
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # key/value heads shared by groups of query heads; None: n_head
    d_model: int = 128
    d_hidden: int | None = None  # SwiGLU's width (intermediate_size); None: 8/3 d_model up to a multiple of 64
    head_dim: int | None = None  # None: d_model // n_head
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = field(default=None, hash=False, metadata={"cli": False})  # HF dict: linear, llama3
    norm_eps: float = 1e-5  # rms_norm_eps
    attention_bias: bool = False  # biases on the q, k, v and output projections
    mlp_bias: bool = False
    tie_embeddings: bool = False  # the LM head is the token embedding
    dropout: float = 0.0
    attention: str = "sdpa"  # key of ATTENTION
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_len", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LmlabError(f"{name} must be a positive integer, got {value!r}", params=(name,))
        for name in ("n_kv_head", "d_hidden", "head_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise LmlabError(f"{name} must be a positive integer or unset, got {value!r}", params=(name,))
        if self.n_head % (self.n_kv_head or self.n_head):
            raise LmlabError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})",
                             params=("n_head", "n_kv_head"))
        if self.head_dim is None and self.d_model % self.n_head:
            raise LmlabError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}), or give head_dim",
                             params=("d_model", "n_head", "head_dim"))
        if self.attention_head_dim % 2:
            raise LmlabError(f"rotary positions need an even head_dim, got {self.attention_head_dim}",
                             params=("head_dim",))
        if not 0.0 <= self.dropout < 1.0:
            raise LmlabError(f"dropout must be in [0, 1), got {self.dropout}", params=("dropout",))
        if self.attention not in ATTENTION:
            raise LmlabError(f"attention must be one of {', '.join(ATTENTION)}, got {self.attention!r}",
                             params=("attention",))
        if not (isinstance(self.rope_theta, (int, float)) and math.isfinite(self.rope_theta) and self.rope_theta > 0):
            raise LmlabError(f"rope_theta must be a positive number, got {self.rope_theta!r}", params=("rope_theta",))
        kind = (self.rope_scaling or {}).get("rope_type", "default")
        if self.rope_scaling is not None and (not isinstance(self.rope_scaling, dict) or kind not in ROPE_SCALING):
            raise LmlabError(f"rope_scaling must be a dict whose rope_type is one of {', '.join(ROPE_SCALING)}, "
                             f"got {self.rope_scaling!r}", params=("rope_scaling",))

    @property
    def attention_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.n_head

    @property
    def feed_forward_width(self) -> int:
        """d_hidden, or Llama's default: 2/3 of 4 d_model, rounded up to a multiple of 64.

        >>> LlamaConfig(vocab_size=10, d_model=576).feed_forward_width
        1536
        """
        return self.d_hidden or 64 * math.ceil(8 * self.d_model / 3 / 64)


def llama_block(config: LlamaConfig, layer: int) -> Block:
    """Layer `layer`: RMSNorm, grouped-query causal self-attention, RMSNorm, SwiGLU."""
    attn = Attention(config.d_model, config.n_head, config.n_kv_head, head_dim=config.attention_head_dim,
                     bias=config.attention_bias, dropout=config.dropout, attention=config.attention, layer=layer)
    mlp = SwiGLU(config.d_model, config.feed_forward_width, bias=config.mlp_bias, dropout=config.dropout)
    return Block(attn, mlp, functools.partial(RMSNorm, config.d_model, eps=config.norm_eps))


class Llama(nn.Module):
    family = "llama"
    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.context_len = config.context_len
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.rotary = RotaryPositions(config.attention_head_dim, config.rope_theta, config.rope_scaling)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(llama_block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=config.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _run(self, ids: torch.Tensor, cache: KVCache | None, padding: torch.Tensor | None = None
             ) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        if start + ids.size(1) > self.context_len:
            raise LmlabError(f"sequence of {start + ids.size(1)} tokens exceeds context_len {self.context_len}")
        if cache is not None:
            cache.reserve(start + ids.size(1))
        positions, mask = positions_and_mask(ids, cache, padding)  # (T,) or (B, T); None or (B, 1, T, Tk)
        x = self.drop(self.tok_emb(ids))  # (B, T, C)
        rotary = self.rotary(positions, x.dtype)
        for block in self.blocks:
            x, _ = block(x, mask, cache, rotary)
        if cache is not None:
            cache.length += ids.size(1)
        return self.norm(x)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced: ids (B, T) -> logits (B, T, V), and the mean cross-entropy if targets are given."""
        hidden = self._run(ids, None)
        if targets is None:
            return self.lm_head(hidden), None  # (B, T, V)
        return softmax_layer(hidden, self.lm_head, targets)

    def step(self, ids: torch.Tensor, state: KVCache | None = None, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, KVCache]:
        """Incremental: feed new ids (B, T_new); return logits (B, V) of the last position and the cache.

        `mask` (B, T_new), 0 at padding: rows of left-padded prompts count their own positions.
        """
        if state is None:
            config = self.config
            capacity = min(self.context_len, max(FIRST_CACHE_POSITIONS, ids.size(1)))
            state = KVCache(config.n_layer, ids.size(0), config.n_kv_head or config.n_head,
                            config.attention_head_dim, capacity, self.tok_emb.weight.dtype, ids.device)
        hidden = self._run(ids, state, mask)
        return self.lm_head(hidden[:, -1]), state  # (B, V)

    def reorder(self, state: KVCache, index: torch.Tensor) -> KVCache:
        return state.reorder(index)
