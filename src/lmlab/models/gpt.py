"""GPT: a decoder-only transformer language model, readable in one sitting.

Token embedding + positional encoding (learned, or sinusoidal as in "Attention Is All You Need"),
pre-LayerNorm blocks of multi-head causal self-attention and a GELU feed-forward with residuals,
a final LayerNorm, and an LM head tied to the token embedding.

The incremental contract (`step`, `reorder`) runs on a preallocated KV cache. What is not here:
training (lmlab/train), decoding strategies (lmlab/generate), checkpoint files (lmlab/io).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.errors import LmlabError
from lmlab.models.base import softmax_layer
from lmlab.models.config import config_from_dict


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context_len: int = 256
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True
    positional: str = "learned"  # key of POSITIONAL
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
        for name, table in (("positional", POSITIONAL), ("activation", ACTIVATIONS), ("attention", ATTENTION)):
            if getattr(self, name) not in table:
                raise LmlabError(f"{name} must be one of {', '.join(table)}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPTConfig":
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def causal_mask(n_query: int, n_key: int, device: torch.device) -> torch.Tensor | None:
    """Bool mask (n_query, n_key): query i sits at absolute position n_key - n_query + i.

    >>> causal_mask(2, 3, torch.device("cpu")).int().tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    if n_query == 1:
        return None  # one new token attends to everything cached
    offset = n_key - n_query
    rows = torch.arange(n_query, device=device)[:, None] + offset
    return torch.arange(n_key, device=device)[None, :] <= rows


def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     dropout: float, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v with a causal mask, written out; returns (output, weights).

    q: (B, H, Tq, D); k, v: (B, H, Tk, D). With `mask` None the queries are the last Tq of the
    Tk positions (plain causal); otherwise `mask` (B, 1, Tq, Tk) is True where attending is allowed.
    """
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, H, Tq, Tk)
    if mask is None:
        mask = causal_mask(q.size(2), k.size(2), q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    out = F.dropout(weights, dropout, training) @ v  # (B, H, Tq, D)
    return out, weights


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   dropout: float, training: bool) -> tuple[torch.Tensor, None]:
    """The same function through PyTorch's fused kernel (no weights returned)."""
    drop = dropout if training else 0.0
    if mask is None:
        if q.size(2) == k.size(2):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True), None
        mask = causal_mask(q.size(2), k.size(2), q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop), None


ATTENTION = {"manual": manual_attention, "sdpa": sdpa_attention}
ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU}


class LearnedPositions(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(config.context_len, config.d_model))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return F.embedding(positions, self.weight)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos encodings: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        position = torch.arange(config.context_len, dtype=torch.float32)[:, None]
        inv_freq = torch.exp(torch.arange(0, config.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / config.d_model))
        table = torch.zeros(config.context_len, config.d_model)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)[:, : config.d_model // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


POSITIONAL = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}


class KVCache:
    """Preallocated keys and values for every layer, filled left to right.

    keys/values: (n_layer, B, n_head, capacity, head_dim); `length` positions are filled. For
    batches of unequal (left-padded) prompts, `valid` (B, capacity) marks real tokens and
    `next_position` (B,) is each row's next position id; both stay None for unpadded batches.
    `reorder` (every step of beam search) gathers into a second pair of buffers and swaps.
    """

    def __init__(self, config: GPTConfig, batch_size: int, dtype: torch.dtype, device: torch.device):
        shape = (config.n_layer, batch_size, config.n_head, config.context_len, config.d_model // config.n_head)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0
        self.valid: torch.Tensor | None = None
        self.next_position: torch.Tensor | None = None
        self.spare: tuple[torch.Tensor, torch.Tensor] | None = None  # reorder's target, allocated on first use

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T_new, D) after the filled part; return all keys/values so far."""
        start, end = self.length, self.length + k.size(2)
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> "KVCache":
        """Row i becomes old row index[i] (the batch may grow: each prompt copied to its beams).

        Only the filled positions are gathered, straight into the spare buffers (already touched
        memory, no temporary), which then become the cache.
        """
        shape = (self.keys.size(0), index.numel(), *self.keys.shape[2:])
        if self.spare is None or self.spare[0].shape != shape:
            self.spare = (self.keys.new_empty(shape), self.values.new_empty(shape))
        keys, values = self.spare
        filled = slice(0, self.length)
        torch.index_select(self.keys[:, :, :, filled], 1, index, out=keys[:, :, :, filled])
        torch.index_select(self.values[:, :, :, filled], 1, index, out=values[:, :, :, filled])
        self.spare = (self.keys, self.values) if self.keys.shape == shape else None
        self.keys, self.values = keys, values
        if self.valid is not None:
            self.valid = self.valid.index_select(0, index)
            self.next_position = self.next_position.index_select(0, index)
        return self


def padded_positions_and_mask(mask: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids (B, T) and attention mask (B, 1, T, Tk) for new tokens with padding `mask` (B, T).

    Padding tokens take no position and are never attended to; each query may always attend to
    itself, so a padding row stays finite (its output is never used).
    """
    B, T = mask.shape
    start = cache.length
    if cache.valid is None:
        cache.valid = torch.ones(B, cache.keys.size(3), dtype=torch.bool, device=mask.device)
        cache.next_position = torch.zeros(B, dtype=torch.long, device=mask.device)
    positions = (cache.next_position[:, None] + mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
    cache.valid[:, start:start + T] = mask
    cache.next_position = cache.next_position + mask.long().sum(1)
    n_key = start + T
    allowed = causal_mask(T, n_key, mask.device)
    allowed = cache.valid[:, None, :n_key] & (allowed if allowed is not None else True)  # (B, T, Tk)
    own = torch.arange(n_key, device=mask.device)[None, :] == (torch.arange(T, device=mask.device)[:, None] + start)
    return positions, (allowed | own)[:, None]  # (B, 1, T, Tk)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attend = ATTENTION[config.attention]

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)  # (B, H, cached + T, D)
        attend = manual_attention if need_weights else self.attend
        y, weights = attend(q, k, v, mask, self.dropout, self.training)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y)), weights


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.act = ACTIVATIONS[config.activation]()
        self.proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.ln_1(x), cache, mask, need_weights)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    family = "gpt"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.context_len = config.context_len
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = POSITIONAL[config.positional](config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
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
        mask = None
        if cache is not None and (padding_mask is not None or cache.valid is not None):
            if padding_mask is None:
                padding_mask = torch.ones(B, T, dtype=torch.bool, device=ids.device)
            positions, mask = padded_positions_and_mask(padding_mask.bool(), cache)  # (B, T), (B, 1, T, Tk)
        else:
            positions = torch.arange(start, start + T, device=ids.device)  # (T,)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))  # (B, T, C)
        maps = []
        for block in self.blocks:
            x, weights = block(x, cache, mask, need_weights)
            if weights is not None:
                maps.append(weights)
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
            state = KVCache(self.config, ids.size(0), self.tok_emb.weight.dtype, ids.device)
        hidden, _ = self._run(ids, state, mask)
        return self.lm_head(hidden[:, -1]), state  # (B, V)

    def reorder(self, state: KVCache, index: torch.Tensor) -> KVCache:
        return state.reorder(index)
