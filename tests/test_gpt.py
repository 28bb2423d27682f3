"""GPT: attention parity with PyTorch's fused kernel, cached and uncached decoding agree,
attention maps, cache reordering, tied embeddings, strict configs and hand-checked positions."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.errors import LmlabError
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.models.layers import causal_mask, manual_attention, sdpa_attention

TINY = dict(vocab_size=50, n_layer=2, n_head=4, d_model=32, context_len=16)
POSITIONALS = ["learned", "sinusoidal"]


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **overrides}))
    with torch.no_grad():  # make the positions matter (learned ones start near zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


# --- attention parity -----------------------------------------------------------------------------


@pytest.mark.parametrize("n_query, n_key", [(7, 7), (1, 1), (3, 9), (1, 6), (5, 6)])
def test_manual_attention_matches_sdpa(n_query, n_key):
    g = torch.Generator().manual_seed(n_query * 31 + n_key)
    q_all, k, v = (torch.randn(2, 3, n_key, 8, generator=g) for _ in range(3))
    # Reference: full causal attention over all n_key positions, keeping the last n_query rows
    # (queries are the last positions: the bottom-right aligned causal mask).
    expected = F.scaled_dot_product_attention(q_all, k, v, is_causal=True)[:, :, -n_query:]
    q = q_all[:, :, -n_query:]
    out, weights = manual_attention(q, k, v, None, dropout=0.0, training=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert weights.shape == (2, 3, n_query, n_key)
    fused, none = sdpa_attention(q, k, v, None, dropout=0.0, training=False)
    assert none is None
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)


def test_causal_mask_is_bottom_right_aligned():
    assert causal_mask(2, 4, torch.device("cpu")).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert causal_mask(3, 3, torch.device("cpu")).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("positional", POSITIONALS)
def test_manual_and_sdpa_models_agree(positional):
    manual = tiny_gpt(positional=positional, attention="manual")
    fused = GPT(GPTConfig(**{**TINY, "positional": positional, "attention": "sdpa"})).eval()
    fused.load_state_dict(manual.state_dict())
    ids = random_ids(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(manual(ids)[0], fused(ids)[0], atol=1e-5, rtol=0)


# --- cached vs uncached ---------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_step_token_by_token_matches_forward(positional, attention):
    model = tiny_gpt(positional=positional, attention=attention)
    ids = random_ids(2, 16)
    with torch.no_grad():
        full, _ = model(ids)  # (B, T, V)
        state = None
        for t in range(ids.size(1)):
            logits, state = model.step(ids[:, t : t + 1], state)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0)
    assert state.length == 16


@pytest.mark.parametrize("prefix", [1, 5, 15])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_prefill_then_step_matches_forward(positional, prefix):
    model = tiny_gpt(positional=positional)
    ids = random_ids(2, 16, seed=2)
    with torch.no_grad():
        full, _ = model(ids)
        logits, state = model.step(ids[:, :prefix], None)
        torch.testing.assert_close(logits, full[:, prefix - 1], atol=1e-5, rtol=0)
        for t in range(prefix, ids.size(1)):
            logits, state = model.step(ids[:, t : t + 1], state)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0)


def test_prefill_in_two_chunks_matches_forward():
    model = tiny_gpt()
    ids = random_ids(1, 12, seed=3)
    with torch.no_grad():
        full, _ = model(ids)
        _, state = model.step(ids[:, :4], None)
        logits, state = model.step(ids[:, 4:12], state)  # several new tokens at once after a cache
    torch.testing.assert_close(logits, full[:, 11], atol=1e-5, rtol=0)


def test_forward_loss_is_cross_entropy_of_logits():
    model = tiny_gpt()
    ids, targets = random_ids(2, 10), random_ids(2, 10, seed=9)
    with torch.no_grad():
        logits, loss = model(ids, targets)
    assert logits.shape == (2, 10, TINY["vocab_size"])
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, TINY["vocab_size"]), targets.reshape(-1)))


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_left_padded_batch_matches_each_row_alone(positional, attention):
    model = tiny_gpt(positional=positional, attention=attention)
    prompts = [random_ids(1, 3, seed=5)[0], random_ids(1, 7, seed=6)[0], random_ids(1, 1, seed=7)[0]]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = True
    new_tokens = random_ids(len(prompts), 4, seed=8)
    with torch.no_grad():
        logits, state = model.step(ids, None, mask)
        batched = [logits]
        for t in range(new_tokens.size(1)):
            logits, state = model.step(new_tokens[:, t : t + 1], state)
            batched.append(logits)
        for row, prompt in enumerate(prompts):
            full, _ = model(torch.cat([prompt, new_tokens[row]])[None])  # the row alone, unpadded
            for t, logits in enumerate(batched):
                torch.testing.assert_close(logits[row], full[0, len(prompt) - 1 + t], atol=1e-5, rtol=0)


def test_reorder_keeps_padding_with_its_row():
    model = tiny_gpt()
    ids = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        _, state = model.step(ids, None, mask)
        state = model.reorder(state, torch.tensor([1, 0, 0]))
        logits, _ = model.step(torch.tensor([[9], [9], [8]]), state)
        short, _ = model(torch.tensor([[5, 6, 9], [5, 6, 8]]))
        long, _ = model(torch.tensor([[1, 2, 3, 4, 9]]))
    torch.testing.assert_close(logits[0], long[0, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1:], short[:, -1], atol=1e-5, rtol=0)


# --- attention maps, reorder, tying ---------------------------------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_attention_weights_are_causal_distributions(attention):
    model = tiny_gpt(attention=attention)
    maps = model.attention_weights(random_ids(2, 9))
    assert len(maps) == TINY["n_layer"]
    for weights in maps:
        assert weights.shape == (2, TINY["n_head"], 9, 9)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, TINY["n_head"], 9), atol=1e-5, rtol=0)
        assert torch.all(weights.triu(diagonal=1) == 0)
        assert torch.all(weights >= 0)
    # The first position can only attend to itself.
    assert torch.all(maps[0][:, :, 0, 0] == 1)


def test_reorder_selects_batch_rows():
    model = tiny_gpt()
    ids = random_ids(3, 6, seed=4)
    index = torch.tensor([2, 0, 2])
    with torch.no_grad():
        _, state = model.step(ids, None)
        state = model.reorder(state, index)
        next_ids = torch.tensor([[7], [8], [9]])
        logits, _ = model.step(next_ids, state)
        expected, _ = model(torch.cat([ids[index], next_ids], dim=1))
    torch.testing.assert_close(logits, expected[:, -1], atol=1e-5, rtol=0)


def test_reorder_every_step_and_growing_batch():
    """As beam search does: copy prompts to beams, then reorder after every step (the cache swaps
    between its two buffers); each row still equals a full forward over its own history."""
    model = tiny_gpt()
    rows = random_ids(2, 5, seed=5)
    with torch.no_grad():
        _, state = model.step(rows, None)
        index = torch.tensor([0, 0, 1, 1])
        for step, new in enumerate([[3], [4], [5], [6]]):
            state = model.reorder(state, index)
            rows = torch.cat([rows[index], torch.tensor(new).expand(4, 1)], dim=1)
            logits, state = model.step(rows[:, -1:], state)
            expected, _ = model(rows)
            torch.testing.assert_close(logits, expected[:, -1], atol=1e-5, rtol=0)
            index = torch.tensor([[1, 0, 3, 2], [3, 3, 0, 1], [0, 1, 2, 3]][step % 3])


def test_embeddings_are_tied():
    model = tiny_gpt()
    assert model.lm_head.weight is model.tok_emb.weight
    names = [name for name, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted once


# --- config ---------------------------------------------------------------------------------------


def test_config_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(LmlabError, match="n_heads.*n_layers|n_layers.*n_heads"):
        GPTConfig.from_dict({"vocab_size": 10, "n_heads": 2, "n_layers": 3})
    assert GPTConfig.from_dict(dict(TINY)) == GPTConfig(**TINY)
    assert GPTConfig.from_dict(GPTConfig(**TINY).to_dict()) == GPTConfig(**TINY)


@pytest.mark.parametrize(
    "bad, name",
    [
        (dict(d_model=30, n_head=4), "divisible"),
        (dict(n_layer=0), "n_layer"),
        (dict(context_len=-1), "context_len"),
        (dict(vocab_size=2.5), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(positional="rotary"), "positional"),
        (dict(attention="flash"), "attention"),
        (dict(activation="swish"), "activation"),
    ],
)
def test_config_rejects_bad_values(bad, name):
    with pytest.raises(LmlabError, match=name):
        GPTConfig.from_dict({**TINY, **bad})


# --- positions ------------------------------------------------------------------------------------


def test_sinusoidal_table_by_hand():
    model = GPT(GPTConfig(vocab_size=5, n_layer=1, n_head=1, d_model=4, context_len=3, positional="sinusoidal"))
    table = model.pos_emb(torch.arange(3))
    # d_model = 4: frequencies 1 and 1/100 (10000^(2/4) = 100).
    expected = torch.tensor([[math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in range(3)])
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_sinusoidal_table_with_odd_width():
    model = GPT(GPTConfig(vocab_size=5, n_layer=1, n_head=1, d_model=3, context_len=4, positional="sinusoidal"))
    table = model.pos_emb(torch.arange(4))
    expected = torch.tensor([[math.sin(p), math.cos(p), math.sin(p / 10000 ** (2 / 3))] for p in range(4)])
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)


def test_sinusoidal_positions_are_not_parameters_or_saved():
    model = GPT(GPTConfig(**{**TINY, "positional": "sinusoidal"}))
    assert not any("pos_emb" in name for name in model.state_dict())


# --- context length -------------------------------------------------------------------------------


def test_longer_than_context_len_raises():
    model = tiny_gpt()
    with pytest.raises(LmlabError, match="context_len"):
        model(random_ids(1, 17))
    with pytest.raises(LmlabError, match="context_len"):
        model.step(random_ids(1, 17), None)
    with torch.no_grad():
        _, state = model.step(random_ids(1, 16), None)  # exactly full is fine
    with pytest.raises(LmlabError, match="context_len"):
        model.step(random_ids(1, 1), state)
