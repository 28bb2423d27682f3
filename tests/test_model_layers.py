"""models/layers.py: attention (every implementation, any n_kv_head) against the textbook formula
and PyTorch's modules, the KV cache against full forwards, RMSNorm and RoPE against transformers'
Llama, SwiGLU against its formula, masks and sinusoidal tables by hand, and the pieces composed as
Llama is against transformers' LlamaForCausalLM."""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.errors import LmlabError
from lmlab.models.layers import (ACTIVATIONS, ATTENTION, MLP, Attention, Block, KVCache, RMSNorm, RotaryPositions,
                                 SinusoidalPositions, SwiGLU, padded_causal_mask, padding_mask,
                                 positions_from_padding, rope_frequencies, rotate)

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.models.llama.modeling_llama import (LlamaRMSNorm, LlamaRotaryEmbedding,  # noqa: E402
                                                      apply_rotary_pos_emb)

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
SCALINGS = {"default": None, "linear": {"rope_type": "linear", "factor": 4.0}, "llama3": LLAMA3}


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_attention(q, k, v, allowed):
    """The textbook formula, each key/value head repeated for the query heads of its group."""
    group = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v, scores.softmax(-1)


# --- masks and positions by hand ----------------------------------------------------------------


def test_padded_causal_mask_and_positions_by_hand():
    valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
    mask = padded_causal_mask(valid, 2)  # the last two of four positions are the queries
    assert mask.shape == (2, 1, 2, 4)
    assert mask[0, 0].int().tolist() == [[0, 0, 1, 0], [0, 0, 1, 1]]
    assert mask[1, 0].int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert padded_causal_mask(torch.tensor([[False, True]]), 2)[0, 0].int().tolist() == [[1, 0], [0, 1]]  # own slot
    assert positions_from_padding(valid).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert padding_mask(valid)[:, 0, 0].equal(valid)


# --- attention ----------------------------------------------------------------------------------

CASES = {  # name: (n_query, n_key, causal, padded)
    "causal": (6, 6, True, False), "causal-after-cache": (3, 8, True, False), "one-new-token": (1, 7, True, False),
    "not-causal": (5, 9, False, False), "padded-causal": (4, 6, True, True), "padded-not-causal": (3, 5, False, True),
}


def case_mask(n_query, n_key, causal, padded):
    """(mask to pass, allowed (B, 1, Tq, Tk) for the reference)."""
    valid = torch.ones(2, n_key, dtype=torch.bool)
    if padded:
        valid[0, :2] = False  # row 0 left-padded by two
    if causal:
        mask = padded_causal_mask(valid, n_query)
    else:
        mask = padding_mask(valid).expand(2, 1, n_query, n_key)
    return (mask if padded else None), mask


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("attention", ATTENTION)
def test_attention_matches_reference_for_any_n_kv_head(attention, case, n_kv_head):
    n_query, n_key, causal, padded = CASES[case]
    q = randn(2, 4, n_query, 8, seed=1)
    k, v = randn(2, n_kv_head, n_key, 8, seed=2), randn(2, n_kv_head, n_key, 8, seed=3)
    mask, allowed = case_mask(n_query, n_key, causal, padded)
    expected, expected_weights = reference_attention(q, k, v, allowed)
    out, weights = ATTENTION[attention](q, k, v, mask, causal=causal)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    if weights is not None:
        torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=0)
    # Grouped-query attention is attention over the key/value heads expanded with repeat_interleave.
    group = 4 // n_kv_head
    expanded, _ = ATTENTION[attention](q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), mask,
                                       causal=causal)
    torch.testing.assert_close(out, expanded, atol=1e-6, rtol=0)


def mha_copy(attn: Attention, mha: nn.MultiheadAttention, cross: bool = False) -> None:
    """Load nn.MultiheadAttention's weights into an lmlab Attention (self or cross)."""
    with torch.no_grad():
        if not cross:
            attn.qkv.weight.copy_(mha.in_proj_weight)
            attn.qkv.bias.copy_(mha.in_proj_bias)
        else:
            width = attn.q.out_features
            attn.q.weight.copy_(mha.in_proj_weight[:width])
            attn.q.bias.copy_(mha.in_proj_bias[:width])
            attn.kv.weight.copy_(mha.in_proj_weight[width:])
            attn.kv.bias.copy_(mha.in_proj_bias[width:])
        attn.proj.weight.copy_(mha.out_proj.weight)
        attn.proj.bias.copy_(mha.out_proj.bias)


@pytest.mark.parametrize("kind", ["causal-self", "padded-self", "cross"])
@pytest.mark.parametrize("attention", ATTENTION)
def test_attention_module_matches_multihead_attention(attention, kind):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    attn = Attention(16, 4, attention=attention, causal=kind == "causal-self", cross=kind == "cross").eval()
    mha_copy(attn, mha, cross=kind == "cross")
    x, memory = randn(2, 5, 16, seed=1), randn(2, 7, 16, seed=2)
    valid = torch.ones(2, 7 if kind == "cross" else 5, dtype=torch.bool)
    if kind != "causal-self":
        valid[1, -3:] = False  # row 1 is padded at the end
    with torch.no_grad():
        if kind == "causal-self":
            causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True: not allowed, as nn.MultiheadAttention takes it
            expected, expected_weights = mha(x, x, x, attn_mask=causal, average_attn_weights=False)
            out, _ = attn(x)
            _, weights = attn(x, need_weights=True)
        elif kind == "padded-self":
            expected, expected_weights = mha(x, x, x, key_padding_mask=~valid, average_attn_weights=False)
            out, _ = attn(x, padding_mask(valid))
            _, weights = attn(x, padding_mask(valid), need_weights=True)
        else:
            expected, expected_weights = mha(x, memory, memory, key_padding_mask=~valid, average_attn_weights=False)
            keys_values = attn.memory_keys_values(memory)
            out, _ = attn(x, padding_mask(valid), memory=keys_values)
            _, weights = attn(x, padding_mask(valid), memory=keys_values, need_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=0)
    assert torch.all(weights.masked_select(~valid[:, None, None, :].expand_as(weights)) == 0)


def test_attention_rejects_heads_that_do_not_group():
    with pytest.raises(LmlabError, match="n_head .4. must be a multiple of n_kv_head .3."):
        Attention(32, 4, 3)


# --- the block, pre- and post-norm, with and without cross-attention ---------------------------


def copy_linear(ours: nn.Linear, theirs: nn.Linear) -> None:
    with torch.no_grad():
        ours.weight.copy_(theirs.weight)
        ours.bias.copy_(theirs.bias)


def block_like(layer: nn.Module, norm_first: bool, cross: bool, attention: str) -> Block:
    """An lmlab Block with the weights of nn.TransformerEncoderLayer / nn.TransformerDecoderLayer."""
    d_model = layer.linear1.in_features
    norm = functools.partial(nn.LayerNorm, d_model)
    block = Block(Attention(d_model, layer.self_attn.num_heads, attention=attention, causal=cross),
                  MLP(d_model, layer.linear1.out_features),
                  norm, cross_attn=Attention(d_model, layer.self_attn.num_heads, cross=True) if cross else None,
                  norm_first=norm_first).eval()
    mha_copy(block.attn, layer.self_attn)
    copy_linear(block.mlp.fc, layer.linear1)
    copy_linear(block.mlp.proj, layer.linear2)
    norms = [block.ln_1, block.ln_cross_attn, block.ln_2] if cross else [block.ln_1, block.ln_2]
    for ours, theirs in zip(norms, [layer.norm1, layer.norm2, getattr(layer, "norm3", None)]):
        ours.load_state_dict(theirs.state_dict())
    if cross:
        mha_copy(block.cross_attn, layer.multihead_attn, cross=True)
    return block


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("attention", ATTENTION)
def test_encoder_block_matches_transformer_encoder_layer(attention, norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=norm_first).eval()
    block = block_like(layer, norm_first, cross=False, attention=attention)
    x = randn(2, 6, 16, seed=1)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[0, 4:] = False
    with torch.no_grad():
        expected = layer(x, src_key_padding_mask=~valid)
        out, maps = block(x, padding_mask(valid))
    torch.testing.assert_close(out[valid], expected[valid], atol=1e-5, rtol=0)  # padding rows may differ
    assert maps == []


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("attention", ATTENTION)
def test_decoder_block_matches_transformer_decoder_layer_and_its_cache(attention, norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=norm_first).eval()
    block = block_like(layer, norm_first, cross=True, attention=attention)
    x, memory = randn(2, 5, 16, seed=1), randn(2, 7, 16, seed=2)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 5:] = False
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    with torch.no_grad():
        expected = layer(x, memory, tgt_mask=causal, memory_key_padding_mask=~valid)
        keys_values = block.cross_attn.memory_keys_values(memory)  # once, reused at every step
        out, _ = block(x, memory=keys_values, memory_mask=padding_mask(valid))
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        _, maps = block(x, memory=keys_values, memory_mask=padding_mask(valid), need_weights=True)
        assert [m.shape for m in maps] == [(2, 4, 5, 5), (2, 4, 5, 7)]  # self, then cross
        assert torch.all(maps[1][1, :, :, 5:] == 0)
        cache = KVCache(1, 2, 4, 4, 8, torch.float32, torch.device("cpu"))
        for t in range(5):
            step, _ = block(x[:, t:t + 1], cache=cache, memory=keys_values, memory_mask=padding_mask(valid))
            cache.length += 1
            torch.testing.assert_close(step[:, 0], expected[:, t], atol=1e-5, rtol=0)


# --- norms --------------------------------------------------------------------------------------


def test_rmsnorm_matches_torch_and_llama():
    x, weight = randn(3, 5, 24, seed=1) * 3, randn(24, seed=2)
    ours, torch_norm, llama = RMSNorm(24, eps=1e-6), nn.RMSNorm(24, eps=1e-6), LlamaRMSNorm(24, eps=1e-6)
    for norm in (ours, torch_norm, llama):
        with torch.no_grad():
            norm.weight.copy_(weight)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torch_norm(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(ours(x), llama(x), atol=1e-6, rtol=0)
        ours, llama = ours.to(torch.bfloat16), llama.to(torch.bfloat16)  # float32 inside, weight after the cast back
        assert torch.equal(ours(x.bfloat16()), llama(x.bfloat16()))
    with pytest.raises(LmlabError, match="rmsnorm has no bias"):
        RMSNorm(4, bias=True)


# --- positions ----------------------------------------------------------------------------------


def test_sinusoidal_table_by_hand():
    table = SinusoidalPositions(3, 4)(torch.arange(3))
    # d_model = 4: frequencies 1 and 1/100 (10000^(2/4) = 100).
    expected = torch.tensor([[math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in range(3)])
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)
    assert SinusoidalPositions(3, 4)(torch.tensor([[2, 0]])).shape == (1, 2, 4)  # positions per row


@pytest.mark.parametrize("scaling", SCALINGS)
def test_rotary_matches_llama_rotary_embedding(scaling):
    config = LlamaConfig(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rope_theta=10000.0, rope_scaling=dict(SCALINGS[scaling]) if SCALINGS[scaling] else None)
    theirs = LlamaRotaryEmbedding(config)
    ours = RotaryPositions(32, theta=10000.0, scaling=SCALINGS[scaling])
    assert torch.equal(ours.inv_freq, theirs.inv_freq)
    positions = torch.stack([torch.arange(6), torch.arange(5000, 5006)])  # each row its own positions
    q, k = randn(2, 4, 6, 32, seed=1), randn(2, 2, 6, 32, seed=2)
    cos, sin = theirs(q, positions)
    expected_q, expected_k = apply_rotary_pos_emb(q, k, cos, sin)
    cos, sin = ours(positions)
    torch.testing.assert_close(rotate(q, cos, sin), expected_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate(k, cos, sin), expected_k, atol=1e-6, rtol=0)


def test_llama3_scaling_keeps_short_divides_long_and_blends_between():
    ratio = rope_frequencies(32, scaling=LLAMA3) / rope_frequencies(32)
    assert ratio[0] == 1 and ratio[-1] == 1 / 8
    assert torch.any((ratio < 1) & (ratio > 1 / 8))


@pytest.mark.parametrize("scaling, message", [({"rope_type": "yarn"}, "one of default, linear, llama3"),
                                              ({"rope_type": "linear"}, "needs 'factor'")])
def test_rope_scaling_errors_name_the_problem(scaling, message):
    with pytest.raises(LmlabError, match=message):
        rope_frequencies(8, scaling=scaling)


# --- feed-forwards ------------------------------------------------------------------------------


def test_swiglu_is_its_formula():
    ff, x = SwiGLU(8, 12), randn(2, 3, 8)
    gate, up = x @ ff.gate.weight.T, x @ ff.up.weight.T
    expected = (gate * torch.sigmoid(gate) * up) @ ff.down.weight.T  # down(silu(gate(x)) * up(x))
    torch.testing.assert_close(ff(x), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("activation, formula", [("gelu", F.gelu), ("relu", F.relu),
                                                 ("gelu_tanh", functools.partial(F.gelu, approximate="tanh"))])
def test_mlp_is_its_formula(activation, formula):
    assert set(ACTIVATIONS) == {"gelu", "gelu_tanh", "relu"}
    ff, x = MLP(8, 32, activation=activation), randn(2, 3, 8)
    expected = F.linear(formula(F.linear(x, ff.fc.weight, ff.fc.bias)), ff.proj.weight, ff.proj.bias)
    torch.testing.assert_close(ff(x), expected, atol=1e-6, rtol=0)


# --- the pieces composed as Llama is: KV cache with n_kv_head < n_head, padding, transformers ---


class TinyLlama(nn.Module):
    """RMSNorm, rotary positions, grouped-query attention and SwiGLU in pre-norm blocks: enough to
    check that the pieces compose (the family itself is models/llama.py's business)."""

    def __init__(self, attention: str = "sdpa", scaling=None, vocab_size: int = 40, n_layer: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.n_layer, self.n_kv_head, self.head_dim = n_layer, 2, 8
        self.tok_emb = nn.Embedding(vocab_size, 32)
        self.rotary = RotaryPositions(8, theta=10000.0, scaling=scaling)
        norm = functools.partial(RMSNorm, 32, eps=1e-6)
        self.blocks = nn.ModuleList(Block(Attention(32, 4, 2, bias=False, attention=attention, layer=i),
                                          SwiGLU(32, 48), norm) for i in range(n_layer))
        self.norm = norm()
        self.head = nn.Linear(32, vocab_size, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(0.1 * torch.randn_like(p))  # norms away from 1

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.n_layer, batch_size, self.n_kv_head, self.head_dim, 32, torch.float32, torch.device("cpu"))

    def forward(self, ids, cache: KVCache | None = None, padding: torch.Tensor | None = None) -> torch.Tensor:
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        mask = None
        if cache is not None and (padding is not None or cache.valid is not None):
            positions = cache.track_padding(padding if padding is not None else torch.ones(B, T, dtype=torch.bool))
            mask = padded_causal_mask(cache.valid[:, :start + T], T)
        elif padding is not None:
            positions, mask = positions_from_padding(padding), padded_causal_mask(padding, T)
        else:
            positions = torch.arange(start, start + T)
        rotary = self.rotary(positions)
        x = self.tok_emb(ids)
        for block in self.blocks:
            x, _ = block(x, mask, cache, rotary)
        if cache is not None:
            cache.length += T
        return self.head(self.norm(x))  # (B, T, V)


def ids_of(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(40, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention", ATTENTION)
def test_kv_cache_with_fewer_kv_heads_prefill_then_steps_match_forward(attention):
    model = TinyLlama(attention).eval()
    ids = ids_of(2, 12, seed=1)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        torch.testing.assert_close(model(ids[:, :5], cache), full[:, :5], atol=1e-5, rtol=0)
        assert cache.keys.shape == (2, 2, 2, 32, 8)  # (n_layer, B, n_kv_head, capacity, head_dim): not expanded
        for t in range(5, 11):
            torch.testing.assert_close(model(ids[:, t:t + 1], cache)[:, 0], full[:, t], atol=1e-5, rtol=0)
        # A mask first given after unpadded steps continues each row's positions.
        last = model(ids[:, 11:], cache, padding=torch.ones(2, 1, dtype=torch.bool))
    torch.testing.assert_close(last[:, 0], full[:, 11], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ATTENTION)
def test_kv_cache_reorder_selects_rows_as_the_batch_grows(attention):
    model = TinyLlama(attention).eval()
    rows = ids_of(2, 4, seed=2)
    with torch.no_grad():
        cache = model.new_cache(2)
        model(rows, cache)
        for index in ([0, 0, 1, 1, 1], [4, 3, 0, 1, 2], [1, 1, 1, 0, 0]):  # grows to 5 beams, then reshuffles
            index = torch.tensor(index)
            cache.reorder(index)
            rows = torch.cat([rows[index], ids_of(5, 1, seed=int(index.sum()))], dim=1)
            torch.testing.assert_close(model(rows[:, -1:], cache)[:, 0], model(rows)[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ATTENTION)
def test_left_padded_rows_match_each_row_alone(attention):
    model = TinyLlama(attention).eval()
    prompts = [ids_of(1, 3, seed=5)[0], ids_of(1, 7, seed=6)[0], ids_of(1, 1, seed=7)[0]]
    ids = torch.zeros(3, 7, dtype=torch.long)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, 7 - len(prompt):], padding[row, 7 - len(prompt):] = prompt, True
    new = ids_of(3, 3, seed=8)
    with torch.no_grad():
        cache = model.new_cache(3)
        steps = [model(ids, cache, padding)[:, -1]] + [model(new[:, t:t + 1], cache)[:, 0] for t in range(3)]
        uncached = model(ids, padding=padding)  # the padded batch without a cache
        for row, prompt in enumerate(prompts):
            alone = model(torch.cat([prompt, new[row]])[None])[0]
            torch.testing.assert_close(uncached[row, 7 - len(prompt):], alone[:len(prompt)], atol=1e-5, rtol=0)
            for t, logits in enumerate(steps):
                torch.testing.assert_close(logits[row], alone[len(prompt) - 1 + t], atol=1e-5, rtol=0)


def llama_like(ours: TinyLlama, scaling) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0,
                         rope_scaling=dict(scaling) if scaling else None, max_position_embeddings=64,
                         tie_word_embeddings=False, attn_implementation="eager")
    theirs = LlamaForCausalLM(config).eval()
    state = {"model.embed_tokens.weight": ours.tok_emb.weight, "model.norm.weight": ours.norm.weight,
             "lm_head.weight": ours.head.weight}
    for i, block in enumerate(ours.blocks):
        q, k, v = block.attn.qkv.weight.split([32, 16, 16])
        for name, weight in (("self_attn.q_proj", q), ("self_attn.k_proj", k), ("self_attn.v_proj", v),
                             ("self_attn.o_proj", block.attn.proj.weight), ("mlp.gate_proj", block.mlp.gate.weight),
                             ("mlp.up_proj", block.mlp.up.weight), ("mlp.down_proj", block.mlp.down.weight),
                             ("input_layernorm", block.ln_1.weight), ("post_attention_layernorm", block.ln_2.weight)):
            state[f"model.layers.{i}.{name}.weight"] = weight
    theirs.load_state_dict({name: weight.detach() for name, weight in state.items()}, strict=True)
    return theirs


@pytest.mark.parametrize("scaling", SCALINGS)
def test_composed_as_llama_matches_transformers(scaling):
    ours = TinyLlama(scaling=SCALINGS[scaling]).eval()
    theirs = llama_like(ours, SCALINGS[scaling])
    ids = ids_of(2, 10, seed=3)
    padding = torch.ones(2, 10, dtype=torch.bool)
    padding[0, :4] = False
    positions = (padding.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-5, rtol=0)
        expected = theirs(ids, attention_mask=padding.long(), position_ids=positions).logits
        torch.testing.assert_close(ours(ids, padding=padding)[padding], expected[padding], atol=1e-5, rtol=0)
