"""The Transformer of "Attention Is All You Need": an encoder-decoder for translation.

The encoder is a stack of blocks of multi-head self-attention over the whole (padded) source and a
feed-forward; the decoder's blocks add, between masked self-attention and the feed-forward, a
cross-attention whose keys and values are the encoder's output. Embeddings are scaled by
sqrt(d_model) and positions (sinusoidal or learned) added; norms go before each sublayer
(`norm_first`, with a final norm on each stack) or after each residual sum (the paper's). When the
source and the target share one vocabulary, the source embedding, the target embedding and the
softmax layer are one matrix (`tie_embeddings`).

Every piece (Attention for self- and cross-attention with any n_kv_head, Block, KVCache, masks,
positions, the MLP) is models/layers.py's, shared with GPT and Llama; this file only composes them.
The conditional contract: `encode(source, source_mask)` computes the encoder output and every
decoder layer's cross-attention keys and values once; `step(ids, state, mask)` decodes on a KV cache
from that state; `reorder(state, index)` selects rows. Weights come out only from
`attention_weights`. Label smoothing and the warmup schedule are the trainer's.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.base import softmax_layer
from lmlab.models.config import ModelConfig
from lmlab.models.layers import (ACTIVATIONS, ATTENTION, MLP, NORMS, POSITIONS, Attention, Block, KVCache,
                                 LearnedPositions, padding_mask, positions_and_mask)


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    vocab_size: int  # the target's vocabulary
    source_vocab_size: int | None = field(default=None, metadata={"cli": False})  # None: the source shares the target's vocabulary
    context_len: int = 128  # longest target, in tokens
    max_source_len: int = 128  # longest source, in tokens
    n_layer: int = 3  # encoder blocks
    n_decoder_layer: int | None = None  # decoder blocks (None: n_layer)
    n_head: int = 4
    d_model: int = 256
    d_hidden: int | None = None  # the feed-forward's width (None: 4 d_model)
    dropout: float = 0.1
    positional: str = "sinusoidal"  # key of POSITIONS
    norm_first: bool = True  # pre-LayerNorm; False: post-LayerNorm, as in the paper
    activation: str = "relu"  # key of ACTIVATIONS
    tie_embeddings: bool = True  # one matrix for both embeddings and the softmax layer (shared vocabulary only)
    norm_eps: float = 1e-5
    attention: str = "sdpa"  # key of ATTENTION

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_len", "max_source_len", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LmlabError(f"{name} must be a positive integer, got {value!r}", params=(name,))
        for name in ("source_vocab_size", "n_decoder_layer", "d_hidden"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise LmlabError(f"{name} must be a positive integer or unset, got {value!r}", params=(name,))
        if self.d_model % self.n_head:
            raise LmlabError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})",
                             params=("d_model", "n_head"))
        if not 0.0 <= self.dropout < 1.0:
            raise LmlabError(f"dropout must be in [0, 1), got {self.dropout}", params=("dropout",))
        for name, table in (("positional", POSITIONS), ("activation", ACTIVATIONS), ("attention", ATTENTION)):
            if getattr(self, name) not in table:
                raise LmlabError(f"{name} must be one of {', '.join(table)}, got {getattr(self, name)!r}",
                                 params=(name,))


@dataclass(frozen=True)
class TransformerState:
    """What decoding carries: each decoder layer's cross-attention (keys, values) (B, H, S, D) of the
    encoder output, the source mask (B, S), and the decoder's self-attention cache (None until the
    first step)."""

    memory: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    memory_mask: torch.Tensor
    cache: KVCache | None = None


def transformer_block(config: TransformerConfig, layer: int, decoder: bool) -> Block:
    """Encoder block `layer` (self-attention over the source) or decoder block `layer` (masked
    self-attention, then cross-attention to the encoder output)."""
    C, H = config.d_model, config.n_head
    common = dict(dropout=config.dropout, attention=config.attention)
    attn = Attention(C, H, causal=decoder, layer=layer, **common)
    cross = Attention(C, H, cross=True, layer=layer, **common) if decoder else None
    mlp = MLP(C, config.d_hidden or 4 * C, activation=config.activation, dropout=config.dropout)
    norm = functools.partial(NORMS["layernorm"], C, eps=config.norm_eps)
    return Block(attn, mlp, norm, cross_attn=cross, norm_first=config.norm_first)


class Transformer(nn.Module):
    family = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.context_len = config.context_len
        self.max_source_len = config.max_source_len
        C = config.d_model
        shared = config.source_vocab_size is None
        self.tgt_emb = nn.Embedding(config.vocab_size, C)
        self.src_emb = self.tgt_emb if shared and config.tie_embeddings else nn.Embedding(
            config.source_vocab_size or config.vocab_size, C)
        self.pos_emb = POSITIONS[config.positional](max(config.context_len, config.max_source_len), C)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(transformer_block(config, i, decoder=False) for i in range(config.n_layer))
        n_decoder = config.n_decoder_layer or config.n_layer
        self.decoder = nn.ModuleList(transformer_block(config, i, decoder=True) for i in range(n_decoder))
        final = (lambda: nn.LayerNorm(C, eps=config.norm_eps)) if config.norm_first else nn.Identity
        self.ln_enc, self.ln_dec = final(), final()
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_embeddings:
            self.lm_head.weight = self.tgt_emb.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, LearnedPositions)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.d_model ** -0.5)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, embedding: nn.Embedding, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.drop(embedding(ids) * math.sqrt(self.config.d_model) + self.pos_emb(positions))  # (B, T, C)

    def _encode(self, source: torch.Tensor, source_mask: torch.Tensor | None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        B, S = source.shape
        if S > self.max_source_len:
            raise LmlabError(f"a source of {S} tokens is longer than the model's max_source_len "
                             f"{self.max_source_len}", params=("max_source_len",))
        if source_mask is None:
            source_mask = torch.ones(B, S, dtype=torch.bool, device=source.device)
        mask = padding_mask(source_mask.bool())  # (B, 1, 1, S)
        x = self._embed(self.src_emb, source, torch.arange(S, device=source.device))
        maps = []
        for block in self.encoder:
            x, block_maps = block(x, mask, need_weights=need_weights)
            maps += block_maps
        return self.ln_enc(x), source_mask.bool(), maps  # (B, S, C)

    def encode(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> TransformerState:
        """Read right-padded sources (B, S) (`source_mask` False at padding) into the state decoding starts from."""
        memory, mask, _ = self._encode(source, source_mask)
        keys_values = tuple(block.cross_attn.memory_keys_values(memory) for block in self.decoder)
        return TransformerState(keys_values, mask)

    def _decode(self, ids: torch.Tensor, state: TransformerState, padding: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        cache = state.cache
        start = cache.length if cache is not None else 0
        if start + ids.size(1) > self.context_len:
            raise LmlabError(f"a target of {start + ids.size(1)} tokens exceeds context_len {self.context_len}",
                             params=("context_len",))
        positions, mask = positions_and_mask(ids, cache, padding)  # (T,) or (B, T); None or (B, 1, T, Tk)
        x = self._embed(self.tgt_emb, ids, positions)
        memory_mask = padding_mask(state.memory_mask)  # (B, 1, 1, S)
        maps = []
        for block, memory in zip(self.decoder, state.memory):
            x, block_maps = block(x, mask, cache, memory=memory, memory_mask=memory_mask, need_weights=need_weights)
            maps += block_maps
        if cache is not None:
            cache.length += ids.size(1)
        return self.ln_dec(x), maps  # (B, T, C)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, *, source: torch.Tensor,
                source_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forced: target inputs ids (B, T) given sources (B, S) -> logits (B, T, V), and the
        mean cross-entropy against targets (-1 skipped) when given."""
        hidden, _ = self._decode(ids, self.encode(source, source_mask))
        if targets is None:
            return self.lm_head(hidden), None
        return softmax_layer(hidden, self.lm_head, targets)

    def attention_weights(self, ids: torch.Tensor, *, source: torch.Tensor,
                          source_mask: torch.Tensor | None = None) -> dict[str, list[torch.Tensor]]:
        """Every layer's weights, (B, n_head, T_query, T_key) each: "encoder" (source x source),
        "self" (target x target, masked) and "cross" (target x source)."""
        memory, mask, encoder_maps = self._encode(source, source_mask, need_weights=True)
        state = TransformerState(tuple(block.cross_attn.memory_keys_values(memory) for block in self.decoder), mask)
        _, maps = self._decode(ids, state, need_weights=True)
        return {"encoder": encoder_maps, "self": maps[0::2], "cross": maps[1::2]}

    def step(self, ids: torch.Tensor, state: TransformerState, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, TransformerState]:
        """Feed new target ids (B, T_new) from `state` (from `encode`, or a step): logits (B, V) of
        the last position and the state with the cache grown. `mask` (B, T_new) is 0 at left padding."""
        if not isinstance(state, TransformerState):
            raise LmlabError("a transformer decodes from the state model.encode(source) returns; got "
                             f"{type(state).__name__}")
        if state.cache is None:  # the encoder's state stays as it was: a sliding window starts from it again
            config = self.config
            cache = KVCache(len(self.decoder), ids.size(0), config.n_head, config.d_model // config.n_head,
                            config.context_len, self.tgt_emb.weight.dtype, ids.device)
            state = TransformerState(state.memory, state.memory_mask, cache)
        hidden, _ = self._decode(ids, state, mask)
        return self.lm_head(hidden[:, -1]), state  # (B, V)

    def reorder(self, state: TransformerState, index: torch.Tensor) -> TransformerState:
        memory = tuple((k.index_select(0, index), v.index_select(0, index)) for k, v in state.memory)
        cache = None if state.cache is None else state.cache.reorder(index)
        return TransformerState(memory, state.memory_mask.index_select(0, index), cache)
