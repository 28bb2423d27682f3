"""The model contract (DESIGN.md), checked the same way for every family: teacher-forced and
incremental logits agree position by position, probabilities sum to 1, logits never look ahead,
`reorder` selects rows, a left-padded batch equals each row alone, configs are strict and round-trip.
Recurrent families also continue a text across windows exactly (`forward_with_state`). The n-gram
model is counted from random text (with <eos> id 1 among it) instead of given random weights."""
from __future__ import annotations

import pytest
import torch

from lmlab.data import TokenStream
from lmlab.errors import LmlabError
from lmlab.evaluate import sequential_nll
from lmlab.models import FAMILIES, build_model, families_of_kind

VOCAB = 40
CONFIGS = {
    "gpt": dict(n_layer=1, n_head=2, d_model=16, context_len=16),
    "llama": dict(n_layer=2, n_head=4, n_kv_head=2, d_model=16, d_hidden=24, context_len=16),
    "nplm": dict(order=4, d_embed=8, hidden=16, direct=True),
    "rnn": dict(d_embed=8, hidden=16, layers=2),
    "lstm": dict(d_embed=8, hidden=16, layers=2),
    "gru": dict(d_embed=8, hidden=16, layers=2),
    "ngram": dict(order=3, smoothing="mkn", eos_id=1),
}
RECURRENT = [family for family in CONFIGS if FAMILIES[family].trains_on == "streams"]


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(family, {"vocab_size": VOCAB, **CONFIGS[family]})
    if family == "ngram":
        return model.fit(torch.randint(VOCAB, (3000,), generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():  # move away from the small initial weights, so that differences show
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_every_family_is_tested():
    """Every registered family that generates has a tiny configuration here, so every contract test runs on it."""
    assert set(CONFIGS) == set(families_of_kind("causal", "counted"))
    assert set(RECURRENT) == {"nplm", "rnn", "lstm", "gru"}


@pytest.mark.parametrize("family", CONFIGS)
def test_family_and_config_round_trip(family):
    model = tiny(family)
    assert model.family == family
    config = model.config.to_dict()
    assert build_model(family, config).config == model.config
    with pytest.raises(LmlabError, match="hiden"):
        build_model(family, {**config, "hiden": 3})
    assert model.num_parameters() > 0
    if family != "ngram":  # the n-gram's parameters are its stored probabilities and back-off weights
        assert model.num_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", CONFIGS)
def test_step_token_by_token_matches_forward(family):
    model = tiny(family)
    ids = random_ids(2, 12)
    with torch.no_grad():
        full, _ = model(ids)  # (B, T, V)
        state = None
        for t in range(ids.size(1)):
            logits, state = model.step(ids[:, t: t + 1], state)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", CONFIGS)
def test_prefill_then_step_matches_forward(family):
    model = tiny(family)
    ids = random_ids(2, 12, seed=2)
    with torch.no_grad():
        full, _ = model(ids)
        logits, state = model.step(ids[:, :5], None)
        torch.testing.assert_close(logits, full[:, 4], atol=1e-5, rtol=0)
        for t in range(5, 12):
            logits, state = model.step(ids[:, t: t + 1], state)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", CONFIGS)
def test_probabilities_sum_to_one_and_loss_is_their_cross_entropy(family):
    model = tiny(family)
    ids, targets = random_ids(3, 10), random_ids(3, 10, seed=5)
    with torch.no_grad():
        logits, loss = model(ids, targets)
    assert logits.shape == (3, 10, VOCAB) and torch.isfinite(logits).all()
    probs = logits.softmax(-1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 10))
    expected = -probs.log().gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", CONFIGS)
def test_logits_never_look_ahead(family):
    model = tiny(family)
    ids = random_ids(2, 12)
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("family", CONFIGS)
def test_reorder_selects_batch_rows(family):
    model = tiny(family)
    ids = random_ids(3, 6, seed=4)
    index = torch.tensor([2, 0, 2, 1])  # rows may repeat and the batch may grow (beam search)
    with torch.no_grad():
        _, state = model.step(ids, None)
        state = model.reorder(state, index)
        next_ids = torch.tensor([[7], [8], [9], [10]])
        logits, _ = model.step(next_ids, state)
        expected, _ = model(torch.cat([ids[index], next_ids], dim=1))
    torch.testing.assert_close(logits, expected[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", CONFIGS)
def test_left_padded_batch_matches_each_row_alone(family):
    model = tiny(family)
    prompts = [random_ids(1, 3, seed=5)[0], random_ids(1, 7, seed=6)[0], random_ids(1, 1, seed=7)[0]]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), 3, dtype=torch.long)  # a real token id as padding
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = True
    new_tokens = random_ids(len(prompts), 4, seed=8)
    with torch.no_grad():
        logits, state = model.step(ids, None, mask)
        batched = [logits]
        for t in range(new_tokens.size(1)):
            logits, state = model.step(new_tokens[:, t: t + 1], state)
            batched.append(logits)
        for row, prompt in enumerate(prompts):
            full, _ = model(torch.cat([prompt, new_tokens[row]])[None])  # the row alone, unpadded
            for t, logits in enumerate(batched):
                torch.testing.assert_close(logits[row], full[0, len(prompt) - 1 + t], atol=1e-5, rtol=0)


# --- recurrent families: a text continues across windows ------------------------------------------


@pytest.mark.parametrize("family", RECURRENT)
def test_windows_with_carried_state_equal_the_whole_text(family):
    model = tiny(family)
    ids, targets = random_ids(2, 15), random_ids(2, 15, seed=3)
    with torch.no_grad():
        whole, _ = model(ids)
        parts, state = [], None
        for start in (0, 4, 5, 11):  # windows of 4, 1, 6 and 4 tokens
            end = {0: 4, 4: 5, 5: 11, 11: 15}[start]
            logits, loss, state = model.forward_with_state(ids[:, start:end], targets[:, start:end], state)
            parts.append(logits)
            assert loss.shape == () and torch.isfinite(loss)
    assert isinstance(state, tuple) and all(isinstance(t, torch.Tensor) for t in state)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", RECURRENT)
def test_targets_of_minus_one_are_ignored(family):
    model = tiny(family)
    ids, targets = random_ids(2, 6), random_ids(2, 6, seed=3)
    masked = targets.clone()
    masked[1, 3:] = -1
    with torch.no_grad():
        logits, loss, _ = model.forward_with_state(ids, masked)
    log_probs = logits.log_softmax(-1)
    kept = masked >= 0
    expected = -log_probs.gather(-1, targets[..., None])[..., 0][kept].mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", RECURRENT)
def test_scoring_in_order_does_not_depend_on_the_chunk_length(family):
    model = tiny(family)
    ids = random_ids(1, 30, seed=9)
    stream = TokenStream.from_ids(ids[0].tolist())
    with torch.no_grad():
        _, loss = model(ids[:, :-1], ids[:, 1:])
    for chunk in (1, 7, 256):
        total, count = sequential_nll(model, stream, rows=1, chunk=chunk)
        assert count == 29
        assert total / count == pytest.approx(loss.item(), abs=1e-5)
    total, count = sequential_nll(model, stream, rows=3, chunk=4)
    assert count == 29  # every token after the first is predicted exactly once, whatever the rows


# --- every family that generates, through the one decoding loop ------------------------------------

GENERATING = [family for family in CONFIGS if FAMILIES[family].generates]
DECODING = {
    "greedy": dict(do_sample=False),
    "sampled": dict(seed=3, top_k=10, num_return_sequences=2),
    "beams": dict(num_beams=3, num_return_sequences=2, do_sample=False),
}


def char_tokenizer():
    from lmlab.tokenize import CharTokenizer

    tokenizer = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz0123456789 .\n")
    assert tokenizer.vocab_size == VOCAB
    return tokenizer


@pytest.mark.parametrize("decoding", DECODING)
@pytest.mark.parametrize("family", GENERATING)
def test_streamed_events_join_to_what_generate_returns(family, decoding):
    from lmlab.generate import GenerationConfig, generate, stream

    model, tokenizer = tiny(family), char_tokenizer()
    config = GenerationConfig(max_new_tokens=9, logprobs=True, top_logprobs=2, **DECODING[decoding])
    prompts = ["the cat", "a"]
    events = list(stream(model, prompts, config, tokenizer=tokenizer))
    result = generate(model, prompts, config, tokenizer=tokenizer)
    assert len(result.sequences) == 2 * config.num_return_sequences
    for index, sequence in enumerate(result.sequences):
        mine = [e for e in events if e.sequence == index]
        assert "".join(e.text for e in mine) == sequence.text
        assert [e.token_id for e in mine if e.token_id is not None] == sequence.token_ids
        assert [e.finish_reason for e in mine] == [None] * (len(mine) - 1) + [sequence.finish_reason]
        assert all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in mine[:-1])
        assert sequence.prompt_index == index // config.num_return_sequences


@pytest.mark.parametrize("decoding", ["greedy", "beams"])
@pytest.mark.parametrize("family", GENERATING)
def test_a_prompt_in_a_padded_batch_decodes_as_it_does_alone(family, decoding):
    from lmlab.generate import GenerationConfig, generate

    model = tiny(family)
    config = GenerationConfig(max_new_tokens=6, **DECODING[decoding])
    prompts = [random_ids(1, 7, seed=11)[0].tolist(), random_ids(1, 2, seed=12)[0].tolist()]
    together = generate(model, prompts, config).sequences
    for index, prompt in enumerate(prompts):
        alone = generate(model, [prompt], config).sequences
        mine = together[index * len(alone):(index + 1) * len(alone)]
        assert [s.token_ids for s in mine] == [s.token_ids for s in alone]
        for a, b in zip(mine, alone):
            assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
