"""The pieces every attention family composes, the swappable ones chosen from small dicts.

- masks: `causal_mask`, `padded_causal_mask` (left-padded rows over a cache), `padding_mask`
  (attention that is not causal), and `positions_from_padding`;
- attention: `ATTENTION` {"manual", "sdpa"}, the function for any number of key/value heads
  (multi-head, grouped-query, multi-query), and `Attention`, the module with its projections, which
  does self-attention (causal or not, on a `KVCache`) and cross-attention (keys and values from an
  encoder memory), returning the weights when asked;
- `KVCache`: every layer's keys and values, preallocated, reordered for beam search, with the
  bookkeeping of left-padded rows;
- `NORMS` {"layernorm", "rmsnorm"};
- positions: `POSITIONS` {"learned", "sinusoidal"} are added to the token embeddings;
  `RotaryPositions` (RoPE) rotates queries and keys instead, its frequencies rescaled by one of
  `ROPE_SCALING` {"default", "linear", "llama3"};
- feed-forwards: `FEED_FORWARDS` {"mlp", "swiglu"}, the MLP's activation from `ACTIVATIONS`;
- `Block`: self-attention, an optional cross-attention and a feed-forward, each in a residual
  connection with its own norm, taken before the sublayer (GPT-2, Llama) or after the sum (the
  original Transformer, BERT).

What is not here: embeddings, heads, weight initialisation and the order of the stack (each
family's own file), decoding (lmlab/generate), parameter names of other projects (lmlab/io).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.errors import LmlabError

# --- masks and positions of padded rows -------------------------------------------------------


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


def padded_causal_mask(valid: torch.Tensor, n_query: int) -> torch.Tensor:
    """Causal self-attention mask (B, 1, Tq, Tk) for the last n_query of Tk positions whose keys
    are real where `valid` (B, Tk) is True: a query attends to the real keys not after it, and
    always to itself, so the row of a padding query stays finite (its output is never used).

    >>> padded_causal_mask(torch.tensor([[False, True, True]]), 3)[0, 0].int().tolist()
    [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    n_key = valid.size(1)
    query_at = torch.arange(n_key - n_query, n_key, device=valid.device)[:, None]  # (Tq, 1)
    key_at = torch.arange(n_key, device=valid.device)[None, :]  # (1, Tk)
    allowed = valid[:, None, :] & (key_at <= query_at)  # (B, Tq, Tk)
    return (allowed | (key_at == query_at))[:, None]  # (B, 1, Tq, Tk)


def padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """Mask (B, 1, 1, Tk) letting every query see the real keys `valid` (B, Tk): for attention that
    is not causal (an encoder over padded sentences, cross-attention to their memory).

    >>> padding_mask(torch.tensor([[True, False]])).shape
    torch.Size([1, 1, 1, 2])
    """
    return valid[:, None, None, :]


def positions_from_padding(mask: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids (B, T) of tokens whose `mask` (B, T) is 0 at padding: each row counts its own
    real tokens from `start` (B,) on; a padding token takes the position of the last real token
    before it (0 if there is none).

    >>> positions_from_padding(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    >>> positions_from_padding(torch.tensor([[1], [0]]), start=torch.tensor([2, 5])).tolist()
    [[2], [4]]
    """
    start = torch.as_tensor(start, device=mask.device)
    return (start.reshape(-1, 1) + mask.long().cumsum(1) - 1).clamp(min=0)


# --- attention --------------------------------------------------------------------------------


def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                     dropout: float = 0.0, training: bool = False, causal: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(D)) v written out; returns (output (B, H, Tq, D), weights (B, H, Tq, Tk)).

    q: (B, H, Tq, D); k, v: (B, H_kv, Tk, D), each key/value head shared by H / H_kv consecutive
    query heads (H_kv = H: multi-head; 1 < H_kv < H: grouped-query; H_kv = 1: multi-query). The
    query heads of a group are stacked into one matrix product, so keys are never copied per head.
    `mask`, broadcastable to (B, H, Tq, Tk), is True where attending is allowed; without one, causal
    queries are the last Tq of the Tk positions, and queries that are not causal see every key.
    """
    B, H, Tq, D = q.shape
    n_kv_head, Tk = k.size(1), k.size(2)
    grouped = q.reshape(B, n_kv_head, H // n_kv_head * Tq, D)  # a group's query heads stacked
    scores = (grouped @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H_kv, H / H_kv * Tq, Tk)
    scores = scores.view(B, H, Tq, Tk)
    if mask is None and causal:
        mask = causal_mask(Tq, Tk, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # (B, H, Tq, Tk)
    out = F.dropout(weights, dropout, training).view(B, n_kv_head, -1, Tk) @ v  # (B, H_kv, H / H_kv * Tq, D)
    return out.view(B, H, Tq, D), weights


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                   dropout: float = 0.0, training: bool = False, causal: bool = True
                   ) -> tuple[torch.Tensor, None]:
    """The same function through PyTorch's fused kernel (no weights returned); grouped key/value
    heads go to it as they are (`enable_gqa`, exact and faster than expanding them here)."""
    drop = dropout if training else 0.0
    grouped = {"enable_gqa": True} if k.size(1) != q.size(1) else {}
    if mask is None and causal:
        if q.size(2) == k.size(2):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True, **grouped), None
        mask = causal_mask(q.size(2), k.size(2), q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, **grouped), None


ATTENTION = {"manual": manual_attention, "sdpa": sdpa_attention}


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, D) turned by the rotary angles whose cos and sin (..., T, D) RotaryPositions
    gives: dimensions i and i + D/2 form a pair (the rotate-half convention of HF Llama).

    >>> rotate(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])).tolist()
    [[0.0, 1.0]]
    """
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class KVCache:
    """Preallocated keys and values of every layer's self-attention, filled left to right.

    keys/values: (n_layer, B, n_kv_head, capacity, head_dim), `length` positions filled. They keep
    the n_kv_head heads the layers computed; attention shares each among its query heads. For
    batches of unequal (left-padded) prompts, `valid` (B, capacity) marks real tokens and
    `next_position` (B,) is each row's next position id; both stay None for unpadded batches.
    `reorder` (every step of beam search) gathers into a second pair of buffers and swaps.
    """

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (n_layer, batch_size, n_kv_head, capacity, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0
        self.valid: torch.Tensor | None = None
        self.next_position: torch.Tensor | None = None
        self.spare: tuple[torch.Tensor, torch.Tensor] | None = None  # reorder's target, allocated on first use

    def reserve(self, length: int) -> None:
        """Make room for `length` positions, growing the buffers (to at least twice their size, so a
        long generation reallocates only a few times): a model with a long context need not hold
        its whole context from the first token."""
        capacity = self.keys.size(3)
        if length <= capacity:
            return
        grown = max(length, 2 * capacity)
        shape = (*self.keys.shape[:3], grown, self.keys.size(4))
        for name in ("keys", "values"):
            old, new = getattr(self, name), self.keys.new_empty(shape)
            new[:, :, :, :self.length] = old[:, :, :, :self.length]
            setattr(self, name, new)
        if self.valid is not None:
            self.valid = torch.cat([self.valid, self.valid.new_ones(self.valid.size(0), grown - capacity)], dim=1)
        self.spare = None

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H_kv, T_new, D) after the filled part; return all keys/values so far."""
        start, end = self.length, self.length + k.size(2)
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]  # (B, H_kv, end, D)

    def track_padding(self, mask: torch.Tensor) -> torch.Tensor:
        """Note which of the T_new tokens about to be appended are real (`mask` (B, T_new), False at
        padding) and return their position ids (B, T_new), counted per row."""
        if self.valid is None:  # the rows so far were all real
            self.valid = torch.ones(mask.size(0), self.keys.size(3), dtype=torch.bool, device=mask.device)
            self.next_position = torch.full((mask.size(0),), self.length, dtype=torch.long, device=mask.device)
        positions = positions_from_padding(mask, self.next_position)
        self.valid[:, self.length:self.length + mask.size(1)] = mask
        self.next_position = self.next_position + mask.long().sum(1)
        return positions

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


def positions_and_mask(ids: torch.Tensor, cache: KVCache | None, padding: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The position ids and the attention mask of new tokens ids (B, T) in a causal stack.

    Without padding (now or earlier in `cache`): positions (T,) continue the cache and the mask is
    None (plain causal). With padding (`padding` (B, T) False at padding, or a cache that has seen
    some): positions (B, T) count each row's real tokens and the mask (B, 1, T, Tk) hides padding.
    """
    T = ids.size(1)
    start = cache.length if cache is not None else 0
    if cache is not None and (padding is not None or cache.valid is not None):
        if padding is None:
            padding = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        positions = cache.track_padding(padding.bool())  # (B, T)
        return positions, padded_causal_mask(cache.valid[:, :start + T], T)  # (B, 1, T, Tk)
    if padding is not None:
        return positions_from_padding(padding), padded_causal_mask(padding.bool(), T)
    return torch.arange(start, start + T, device=ids.device), None  # (T,)


class Attention(nn.Module):
    """Attention with n_head query heads and n_kv_head key/value heads, with its input and output
    projections.

    Self-attention (the default): one `qkv` projection of x (query heads, then key heads, then
    value heads); the new keys and values go into slot `layer` of a KVCache when one is given;
    `causal` or not. Cross-attention (`cross=True`): `q` projects x, `kv` an encoder memory, which
    `memory_keys_values` does once, so that decoding reuses them at every step. Either way the
    weights come out only when asked (through manual_attention), and `rotary` (cos, sin) from
    RotaryPositions turns queries and keys before the keys are cached.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int | None = None, *, head_dim: int | None = None,
                 bias: bool = True, dropout: float = 0.0, attention: str = "sdpa", causal: bool = True,
                 cross: bool = False, layer: int = 0):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise LmlabError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        if head_dim is None and d_model % n_head:
            raise LmlabError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.head_dim = head_dim or d_model // n_head
        self.causal = causal and not cross
        self.layer = layer
        self.dropout = dropout
        query_width, kv_width = n_head * self.head_dim, n_kv_head * self.head_dim
        if cross:
            self.q = nn.Linear(d_model, query_width, bias=bias)
            self.kv = nn.Linear(d_model, 2 * kv_width, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, query_width + 2 * kv_width, bias=bias)
        self.proj = nn.Linear(query_width, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.attend = ATTENTION[attention]

    def memory_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention's keys and values (B, H_kv, S, D) of an encoder memory (B, S, d_model)."""
        B, S, _ = memory.shape
        keys, values = self.kv(memory).split(self.n_kv_head * self.head_dim, dim=2)
        return keys.view(B, S, -1, self.head_dim).transpose(1, 2), values.view(B, S, -1, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                memory: tuple[torch.Tensor, torch.Tensor] | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, d_model) -> (output (B, T, d_model), weights (B, n_head, T, Tk) or None).

        `mask` as manual_attention takes it (None: causal or not, as built); `memory`: the (keys,
        values) of memory_keys_values, for cross-attention.
        """
        B, T, _ = x.shape
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_dim
        if memory is None:
            if rotary is None:  # split the channels before the heads: its backward is cheaper
                q, k, v = self.qkv(x).split((H * D, H_kv * D, H_kv * D), dim=2)
                q, k, v = (t.view(B, T, -1, D).transpose(1, 2) for t in (q, k, v))  # (B, H|H_kv, T, D)
            else:  # queries and keys turn together: one rotation, not two
                qk, v = self.qkv(x).split(((H + H_kv) * D, H_kv * D), dim=2)
                qk = rotate(qk.view(B, T, H + H_kv, D).transpose(1, 2), *rotary)  # (B, H + H_kv, T, D)
                q, k = qk.split((H, H_kv), dim=1)  # (B, H, T, D), (B, H_kv, T, D)
                v = v.view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)
            if cache is not None:
                k, v = cache.append(self.layer, k, v)  # (B, H_kv, cached + T, D)
        else:
            q = self.q(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k, v = memory  # (B, H_kv, S, D)
        attend = manual_attention if need_weights else self.attend
        y, weights = attend(q, k, v, mask, self.dropout, self.training, self.causal)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H * D)
        return self.resid_dropout(self.proj(y)), weights


# --- norms --------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019; Llama's norm): computed in float32,
    the weight applied after casting back to x's dtype, as transformers' LlamaRMSNorm does.

    >>> [round(value, 4) for value in RMSNorm(2, eps=0.0)(torch.tensor([3.0, 4.0])).tolist()]  # rms: sqrt(12.5)
    [0.8485, 1.1314]
    """

    def __init__(self, d_model: int, eps: float = 1e-6, bias: bool = False):
        super().__init__()
        if bias:
            raise LmlabError("rmsnorm has no bias: use bias=False, or norm='layernorm'")
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:  # one fused kernel, the same arithmetic
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        wide = x.float()
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


NORMS: dict[str, Callable[..., nn.Module]] = {"layernorm": nn.LayerNorm, "rmsnorm": RMSNorm}  # (d_model, eps=, bias=)


# --- positions ----------------------------------------------------------------------------------


class LearnedPositions(nn.Module):
    """One learned vector per position, (n_positions, d_model), added to the token embeddings."""

    def __init__(self, n_positions: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_positions, d_model))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return F.embedding(positions, self.weight)  # (*positions.shape, d_model)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos encodings: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...); not saved."""

    def __init__(self, n_positions: int, d_model: int):
        super().__init__()
        position = torch.arange(n_positions, dtype=torch.float32)[:, None]
        inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(n_positions, d_model)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)[:, : d_model // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]  # (*positions.shape, d_model)


POSITIONS = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}  # (n_positions, d_model)


def unscaled_rope(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """RoPE as trained: the frequencies unchanged."""
    return inv_freq


def linear_rope(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """Position interpolation: every frequency divided by `factor` (position p acts as p / factor)."""
    return inv_freq / scaling["factor"]


def llama3_rope(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1's: wavelengths below original_max_position_embeddings / high_freq_factor kept,
    those above original_max_position_embeddings / low_freq_factor divided by `factor`, and a
    linear blend of the two in between."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    blend = (original / wavelength - low) / (high - low)  # 0 at the long end, 1 at the short end
    blended = (1 - blend) * scaled / factor + blend * scaled
    between = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(between, blended, scaled)


ROPE_SCALING = {"default": unscaled_rope, "linear": linear_rope, "llama3": llama3_rope}  # (inv_freq, scaling)


def rope_frequencies(head_dim: int, theta: float = 10000.0, scaling: dict[str, Any] | None = None
                     ) -> torch.Tensor:
    """RoPE's inverse frequencies (head_dim // 2,): theta^(-2i / head_dim), rescaled by
    ROPE_SCALING[scaling["rope_type"]] reading its parameters from `scaling` (Hugging Face's
    `rope_scaling` dict); float32, the same values transformers computes.

    >>> rope_frequencies(4, theta=100.0).tolist()
    [1.0, 0.10000000149011612]
    >>> rope_frequencies(4, theta=100.0, scaling={"rope_type": "linear", "factor": 2.0}).tolist()
    [0.5, 0.05000000074505806]
    """
    scaling = scaling or {}
    kind = scaling.get("rope_type", "default")
    if kind not in ROPE_SCALING:
        raise LmlabError(f"rope_scaling rope_type must be one of {', '.join(ROPE_SCALING)}, got {kind!r}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    try:
        return ROPE_SCALING[kind](inv_freq, scaling)
    except KeyError as missing:
        raise LmlabError(f"rope_scaling of rope_type {kind!r} needs {missing}") from None


class RotaryPositions(nn.Module):
    """Rotary position embeddings (RoPE, Su et al. 2021): in every query and key head, the pair of
    dimensions (i, i + D/2) turns by position * inv_freq[i], so q . k depends on the distance.

    `forward(positions)` gives (cos, sin) once for all layers; Attention turns its queries and keys
    with `rotate`. The frequencies stay float32 and out of the module's buffers, so that
    `model.to(torch.bfloat16)` cannot round them (the cos and sin are cast to the dtype asked for).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: dict[str, Any] | None = None):
        super().__init__()
        if head_dim % 2:
            raise LmlabError(f"rotary positions need an even head_dim, got {head_dim}")
        self.inv_freq = rope_frequencies(head_dim, theta, scaling)  # (D/2,)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) or (B, T) -> cos, sin: (T, D) or (B, 1, T, D), against heads (B, H, T, D)."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        angles = positions[..., None].float() * self.inv_freq  # (..., T, D/2)
        angles = torch.cat((angles, angles), dim=-1)  # (..., T, D)
        if positions.dim() == 2:
            angles = angles[:, None]  # (B, 1, T, D): the same angles for every head
        return angles.cos().to(dtype), angles.sin().to(dtype)


# --- feed-forwards ------------------------------------------------------------------------------

ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"), "relu": nn.ReLU}


class MLP(nn.Module):
    """proj(act(fc(x))) with a d_hidden-wide middle (GPT: 4 d_model), then residual dropout."""

    def __init__(self, d_model: int, d_hidden: int, *, activation: str = "gelu", bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, d_hidden, bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.proj = nn.Linear(d_hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))  # (B, T, d_hidden) inside


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020; Llama's feed-forward), then residual dropout.

    Three separate Linear layers, one per Hugging Face Llama matrix (gate_proj, up_proj,
    down_proj): fusing gate and up into one product measured no faster on this CPU, at batch 1
    or in training, and would make every converter split it.
    """

    def __init__(self, d_model: int, d_hidden: int, *, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate = nn.Linear(d_model, d_hidden, bias=bias)
        self.up = nn.Linear(d_model, d_hidden, bias=bias)
        self.down = nn.Linear(d_hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))  # (B, T, d_hidden) inside


FEED_FORWARDS = {"mlp": MLP, "swiglu": SwiGLU}  # (d_model, d_hidden, bias=, dropout=)


# --- the block ----------------------------------------------------------------------------------


class Block(nn.Module):
    """One transformer layer from its parts: self-attention, an optional cross-attention to an
    encoder memory, and a feed-forward, each in a residual connection with a norm made by `norm()`.

    norm_first (GPT-2, Llama):  x + attn(ln_1(x)),  x + cross_attn(ln_cross_attn(x)),  x + mlp(ln_2(x))
    otherwise (post-norm: the original Transformer, BERT):  ln_1(x + attn(x)), ..., ln_2(x + mlp(x))
    """

    def __init__(self, attn: Attention, mlp: nn.Module, norm: Callable[[], nn.Module],
                 cross_attn: Attention | None = None, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = norm()
        self.attn = attn
        if cross_attn is not None:
            self.ln_cross_attn = norm()
        self.cross_attn = cross_attn
        self.ln_2 = norm()
        self.mlp = mlp

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                memory: tuple[torch.Tensor, torch.Tensor] | None = None, memory_mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, T, d_model) -> (x, the attention weights of its sublayers when asked: self, then cross).

        `memory`: this block's cross-attention (keys, values), from `cross_attn.memory_keys_values`.
        """
        maps = []
        y, weights = self.attn(self.ln_1(x) if self.norm_first else x, mask, cache, rotary, None, need_weights)
        x = x + y if self.norm_first else self.ln_1(x + y)
        if need_weights:
            maps.append(weights)
        if self.cross_attn is not None:
            y, weights = self.cross_attn(self.ln_cross_attn(x) if self.norm_first else x, memory_mask,
                                         memory=memory, need_weights=need_weights)
            x = x + y if self.norm_first else self.ln_cross_attn(x + y)
            if need_weights:
                maps.append(weights)
        y = self.mlp(self.ln_2(x) if self.norm_first else x)
        x = x + y if self.norm_first else self.ln_2(x + y)
        return x, maps
