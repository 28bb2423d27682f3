"""Batched decoding and beam search against Hugging Face `generate`, token for token.

A tiny random GPT-2 (transformers' GPT2LMHeadModel, weights drawn with std 0.5 so distributions
are peaked enough to avoid near-ties) is copied into lmlab's GPT; greedy, sampling and beam
search over a grid of num_beams x length_penalty x early_stopping x num_return_sequences, with
and without penalties, single prompts and left-padded batches, must give the same sequences and
the same `sequences_scores`. End-of-text is token 3, the one this model picks most often, so
hypotheses finish early and the finished-beam bookkeeping is exercised.
"""
from __future__ import annotations

import itertools
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from typing import NamedTuple  # noqa: E402

from lmlab.errors import LmlabError  # noqa: E402
from lmlab.generate import GenerationConfig, generate, left_pad, stream  # noqa: E402
from lmlab.generate.feed import Feed  # noqa: E402
from lmlab.generate.processors import build_processors  # noqa: E402
from lmlab.models.gpt import GPT, GPTConfig  # noqa: E402

BOS, PAD, EOS = 0, 2, 3
VOCAB, CONTEXT = 64, 64
PROMPTS = [[BOS, 17, 5, 40, 22, 9], [BOS, 33], [BOS, 8, 61, 12]]  # unequal lengths


def hf_to_lmlab(hf_state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """GPT-2 weight names to lmlab's; HF's Conv1D weights are (in, out), nn.Linear wants (out, in)."""
    state = {
        "tok_emb.weight": hf_state["transformer.wte.weight"],
        "lm_head.weight": hf_state["transformer.wte.weight"],
        "pos_emb.weight": hf_state["transformer.wpe.weight"],
        "ln_f.weight": hf_state["transformer.ln_f.weight"],
        "ln_f.bias": hf_state["transformer.ln_f.bias"],
    }
    names = {"ln_1": "ln_1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "ln_2": "ln_2",
             "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
    for i in range(n_layer):
        for hf_name, name in names.items():
            weight = hf_state[f"transformer.h.{i}.{hf_name}.weight"]
            state[f"blocks.{i}.{name}.weight"] = weight if hf_name.startswith("ln") else weight.t()
            state[f"blocks.{i}.{name}.bias"] = hf_state[f"transformer.h.{i}.{hf_name}.bias"]
    return state


@pytest.fixture(scope="module")
def models():
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=CONTEXT, vocab_size=VOCAB,
                                     bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5)
    ours = GPT(GPTConfig(vocab_size=VOCAB, context_len=CONTEXT, n_layer=2, n_head=2, d_model=32,
                         activation="gelu_tanh", norm_eps=config.layer_norm_epsilon)).eval()
    ours.load_state_dict(hf_to_lmlab(hf.state_dict(), 2))
    return hf, ours


def hf_generate(hf, prompts, **options):
    """HF generate on left-padded prompts: (generated ids per returned row, eos included; output)."""
    ids, mask = left_pad(prompts, PAD)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask.long(), pad_token_id=PAD, eos_token_id=EOS,
                          return_dict_in_generate=True, output_scores=True, **options)
    generated = out.sequences[:, ids.shape[1]:].tolist()
    if getattr(out, "beam_indices", None) is not None:  # beams: the length each hypothesis reached
        lengths = (out.beam_indices != -1).sum(dim=1).tolist()
    else:  # greedy/sampling: up to and including the first eos
        lengths = [row.index(EOS) + 1 if EOS in row else len(row) for row in generated]
    return [row[:n] for row, n in zip(generated, lengths)], out


class Completion(NamedTuple):
    """One generated sequence, as these tests compare it with Hugging Face's."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    score: float | None
    top_logprobs: list | None


def decode(model, prompts, config, pad_id=None):
    """The one decoding loop over a batch of prompts: per prompt, its num_return_sequences sequences.
    (The padding id is the loop's own business: the model never sees it unmasked.)"""
    sequences = generate(model, prompts, config).sequences
    per_prompt = config.num_return_sequences
    completions = [Completion(s.token_ids, s.token_logprobs, s.finish_reason, s.score, s.top_logprobs)
                   for s in sequences]
    return [completions[p * per_prompt:(p + 1) * per_prompt] for p in range(len(prompts))]


beam_search = generate_batch = decode  # the strategy follows num_beams


def with_eos(completion):
    return completion.token_ids + ([EOS] if completion.finish_reason == "stop" else [])


def flat(results):
    return [c for per_prompt in results for c in per_prompt]


def config(**options) -> GenerationConfig:
    return GenerationConfig(eot_ids=(EOS,), **{"do_sample": False, **options})


# --- the grid -------------------------------------------------------------------------------------

GRID = list(itertools.product(range(2, 6), (0.5, 1.0, 2.0), (True, False, "never")))
CASES = [(beams, lp, es, returned)
         for beams, lp, es in random.Random(0).sample(GRID, 14)
         for returned in sorted({1, beams})]


@pytest.fixture(scope="module")
def reasons():
    """The finish reasons seen over the grid: both must occur (checked by the test after it)."""
    return set()


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping, num_return_sequences", CASES)
def test_beam_search_matches_hf_on_a_padded_batch(models, reasons, num_beams, length_penalty, early_stopping,
                                                  num_return_sequences):
    hf, ours = models
    options = dict(max_new_tokens=8, num_beams=num_beams, length_penalty=length_penalty,
                   early_stopping=early_stopping, num_return_sequences=num_return_sequences)
    expected, out = hf_generate(hf, PROMPTS, **options)
    results = flat(beam_search(ours, PROMPTS, config(**options), pad_id=PAD))
    assert [with_eos(c) for c in results] == expected
    torch.testing.assert_close(torch.tensor([c.score for c in results]), out.sequences_scores, atol=1e-4, rtol=0)
    reasons.update(c.finish_reason for c in results)


def test_the_grid_saw_finished_and_cut_hypotheses(reasons):
    if reasons:  # empty when run alone
        assert reasons == {"stop", "length"}


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_matches_hf_one_prompt_longer_run(models, prompt, early_stopping):
    hf, ours = models
    options = dict(max_new_tokens=14, num_beams=4, length_penalty=1.5, early_stopping=early_stopping,
                   num_return_sequences=3)
    expected, out = hf_generate(hf, [prompt], **options)
    results = beam_search(ours, [prompt], config(**options), pad_id=PAD)[0]
    assert [with_eos(c) for c in results] == expected
    torch.testing.assert_close(torch.tensor([c.score for c in results]), out.sequences_scores, atol=1e-4, rtol=0)
    assert [c.score for c in results] == sorted((c.score for c in results), reverse=True)


# Found by search: cases where early_stopping False and "never" give different hypotheses in HF.
EARLY_STOPPING_MATTERS = [
    ([[BOS, 52, 53, 4, 48], [BOS, 21, 50, 55]], 3, 1.0, 12),
    ([[BOS, 21], [BOS]], 3, 2.0, 12),
    ([[BOS, 16, 20, 10, 20, 61, 50], [BOS, 17, 42, 31, 56]], 2, 1.5, 8),
    ([[BOS, 12, 17], [BOS], [BOS, 8, 58]], 2, 2.0, 12),
]


@pytest.mark.parametrize("prompts, num_beams, length_penalty, max_new_tokens", EARLY_STOPPING_MATTERS)
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_matches_hf_where_early_stopping_matters(models, prompts, num_beams, length_penalty,
                                                              max_new_tokens, early_stopping):
    hf, ours = models
    options = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                   early_stopping=early_stopping, num_return_sequences=num_beams)
    expected, out = hf_generate(hf, prompts, **options)
    results = flat(beam_search(ours, prompts, config(**options), pad_id=PAD))
    assert [with_eos(c) for c in results] == expected
    torch.testing.assert_close(torch.tensor([c.score for c in results]), out.sequences_scores, atol=1e-4, rtol=0)


PENALTIES = [
    dict(no_repeat_ngram_size=2),
    dict(repetition_penalty=1.5),
    dict(min_new_tokens=4),
    dict(repetition_penalty=0.8, no_repeat_ngram_size=3, min_new_tokens=2),
]


@pytest.mark.parametrize("penalties", PENALTIES)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_penalties_match_hf(models, penalties, num_beams):
    hf, ours = models
    cfg = config(max_new_tokens=10, num_beams=num_beams, **penalties)
    if not build_processors(cfg, prompt_len=1):
        pytest.skip(f"processors for {penalties} are not there yet")
    expected, out = hf_generate(hf, PROMPTS, max_new_tokens=10, num_beams=num_beams, **penalties)
    decode = beam_search if num_beams > 1 else generate_batch
    results = flat(decode(ours, PROMPTS, cfg, pad_id=PAD))
    assert [with_eos(c) for c in results] == expected
    if num_beams > 1:
        torch.testing.assert_close(torch.tensor([c.score for c in results]), out.sequences_scores, atol=1e-4, rtol=0)


# --- greedy and sampling --------------------------------------------------------------------------


def test_greedy_batch_matches_hf_and_each_prompt_alone(models):
    hf, ours = models
    expected, out = hf_generate(hf, PROMPTS, max_new_tokens=12, do_sample=False)
    results = flat(generate_batch(ours, PROMPTS, config(max_new_tokens=12), pad_id=PAD))
    assert [with_eos(c) for c in results] == expected
    assert {c.finish_reason for c in results} == {"stop", "length"}  # rows stop on their own
    for prompt, batched in zip(PROMPTS, results):
        alone = generate_batch(ours, [prompt], config(max_new_tokens=12))[0][0]
        assert alone.token_ids == batched.token_ids
        torch.testing.assert_close(alone.logprobs, batched.logprobs, atol=1e-4, rtol=0)
    # Greedy log-probabilities are the model's own (no processors), as HF's scores.
    for row, c in enumerate(results):
        hf_logprobs = [out.scores[i][row].log_softmax(-1)[t].item() for i, t in enumerate(c.token_ids)]
        torch.testing.assert_close(c.logprobs, hf_logprobs, atol=1e-4, rtol=0)


def test_sampling_batch_matches_hf_with_the_same_seed(models):
    hf, ours = models
    options = dict(max_new_tokens=10, do_sample=True, temperature=0.9, top_k=20, num_return_sequences=2)
    torch.manual_seed(7)  # HF samples from the global generator; ours from a generator seeded alike
    expected, _ = hf_generate(hf, PROMPTS, **options)
    results = flat(generate_batch(ours, PROMPTS, config(seed=7, **options), pad_id=PAD))
    assert [with_eos(c) for c in results] == expected


@pytest.mark.parametrize("warpers", [dict(), dict(temperature=0.8, top_k=10, top_p=0.9)])
def test_beam_sampling_matches_hf_with_the_same_seed(models, warpers):
    hf, ours = models
    options = dict(max_new_tokens=8, do_sample=True, num_beams=3, num_return_sequences=2, **warpers)
    torch.manual_seed(11)
    expected, out = hf_generate(hf, PROMPTS, **options)
    results = flat(beam_search(ours, PROMPTS, config(seed=11, **options), pad_id=PAD))
    assert [with_eos(c) for c in results] == expected
    torch.testing.assert_close(torch.tensor([c.score for c in results]), out.sequences_scores, atol=1e-4, rtol=0)


def test_sampling_is_repeatable_and_rows_differ(models):
    _, ours = models
    cfg = config(max_new_tokens=10, do_sample=True, num_return_sequences=4, seed=1)
    first, again = generate_batch(ours, [PROMPTS[1]], cfg), generate_batch(ours, [PROMPTS[1]], cfg)
    assert first == again
    assert len({tuple(c.token_ids) for c in first[0]}) > 1
    for c in first[0]:
        assert all(lp <= 0 for lp in c.logprobs) and len(c.logprobs) == len(c.token_ids)


def test_cached_and_uncached_greedy_agree(models):
    """The KV-cached batch loop against re-running the whole sequence through forward each step."""
    _, ours = models
    for prompt, c in zip(PROMPTS, flat(generate_batch(ours, PROMPTS, config(max_new_tokens=12)))):
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(12):
                token = int(ours(torch.tensor([ids]))[0][0, -1].argmax())
                ids.append(token)
                if token == EOS:
                    break
        assert ids[len(prompt):] == with_eos(c)


def test_top_logprobs_lists_the_best_alternatives(models):
    _, ours = models
    for decode, beams in ((generate_batch, 1), (beam_search, 2)):
        c = decode(ours, [PROMPTS[0]], config(max_new_tokens=5, num_beams=beams, logprobs=True, top_logprobs=3))[0][0]
        assert len(c.top_logprobs) == len(c.token_ids)
        for token, logprob, top in zip(c.token_ids, c.logprobs, c.top_logprobs):
            assert len(top) == 3 and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
            assert logprob <= top[0][1] + 1e-6
            if beams == 1:  # greedy takes the best; a beam may take any token
                assert token == top[0][0] and logprob == pytest.approx(top[0][1])
            elif logprob >= top[-1][1]:
                assert dict(top)[token] == pytest.approx(logprob)


def test_beam_scores_are_normalised_summed_logprobs(models):
    _, ours = models
    results = beam_search(ours, PROMPTS, config(max_new_tokens=8, num_beams=3, length_penalty=2.0,
                                                num_return_sequences=3))
    for c in flat(results):
        # The score counts the end-of-text token too; its logprob is not in c.logprobs.
        length = len(c.token_ids) + (c.finish_reason == "stop")
        if c.finish_reason == "length":
            assert c.score == pytest.approx(sum(c.logprobs) / length**2.0, abs=1e-4)
        else:
            assert c.score * length**2.0 <= sum(c.logprobs) + 1e-4


# --- context length and errors --------------------------------------------------------------------


def test_batch_past_context_len_slides_like_the_single_prompt_loop(models):
    _, ours = models
    small = GPT(GPTConfig(**{**ours.config.to_dict(), "context_len": 8})).eval()
    small.load_state_dict({k: v[:8] if k == "pos_emb.weight" else v for k, v in ours.state_dict().items()})
    cfg = GenerationConfig(max_new_tokens=10, do_sample=False)  # no end-of-text: run to the end
    results = flat(generate_batch(small, PROMPTS, cfg, pad_id=PAD))
    for prompt, c in zip(PROMPTS, results):
        alone = [e.token_id for e in stream(small, [prompt], cfg) if e.token_id is not None]
        assert c.token_ids == alone
    beams = beam_search(small, PROMPTS, cfg.replace(num_beams=2), pad_id=PAD)
    assert all(len(c.token_ids) == 10 for c in flat(beams))


@pytest.mark.parametrize("prompts", [[], [[]], [[1, -2]], "abc", [["a"]]])
def test_bad_prompts_are_clear_errors(models, prompts):
    _, ours = models
    with pytest.raises(LmlabError, match="prompt"):
        generate_batch(ours, prompts, config(max_new_tokens=2))


def test_num_beams_chooses_the_strategy(models):
    _, ours = models
    assert all(c.score is not None for c in flat(decode(ours, PROMPTS, config(num_beams=2, max_new_tokens=3))))
    assert all(c.score is None for c in flat(decode(ours, PROMPTS, config(max_new_tokens=3))))


def test_beams_without_do_sample_search_as_hf_does(models):
    hf, ours = models
    unset = GenerationConfig(eot_ids=(EOS,), max_new_tokens=8, num_beams=3)  # do_sample left unset
    expected, _ = hf_generate(hf, PROMPTS, max_new_tokens=8, num_beams=3)
    runs = [[with_eos(c) for c in flat(beam_search(ours, PROMPTS, unset, pad_id=PAD))] for _ in range(2)]
    assert runs[0] == runs[1] == expected


@pytest.mark.parametrize("num_beams", [1, 2])
def test_prompt_ids_outside_the_vocabulary_are_an_error(models, num_beams):
    _, ours = models
    decode = beam_search if num_beams > 1 else generate_batch
    with pytest.raises(LmlabError, match=f"prompt 1 .*vocabulary of {VOCAB} tokens"):
        decode(ours, [[BOS, 5], [BOS, VOCAB]], config(max_new_tokens=2, num_beams=num_beams))


def test_no_repeat_ngrams_never_count_the_padding(models):
    """Row [pad, pad, 9] has generated 0: alone, [9, 0] holds no bigram starting with 0, so nothing
    is banned; the padding (id 0, an ordinary token here) must not add the bigrams (0, 0), (0, 9)."""
    _, ours = models
    feed = Feed(ours, [[9], [1, 2, 3]], copies=1, max_new_tokens=1)  # what the processors are shown
    processors = build_processors(GenerationConfig(do_sample=False, no_repeat_ngram_size=2), prompt_len=3)
    history = torch.cat([feed.history(), torch.tensor([[0], [1]])], dim=1)
    assert history[0, :2].lt(0).all() and history[0, 2:].tolist() == [9, 0]  # the padding holds no token
    logits = torch.zeros(2, VOCAB)
    for processor in processors:
        logits = processor(history, logits)
    assert torch.isfinite(logits[0]).all() and torch.isinf(logits[1, 2])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_padded_prompt_gives_what_it_gives_alone_with_bad_words(models, num_beams):
    """The bad word [0, 0, 9, first] can only match if the padding (id 0 when there is no
    end-of-text id) is read as text."""
    _, ours = models
    decode = beam_search if num_beams > 1 else generate_batch
    plain = GenerationConfig(do_sample=False, max_new_tokens=6, num_beams=num_beams)
    first = decode(ours, [[9]], plain)[0][0].token_ids[0]
    config = plain.replace(bad_words_ids=[[0, 0, 9, first]])
    alone = decode(ours, [[9]], config)[0]
    together = decode(ours, [[7, 5, 1, 2, 11], [9]], config)[1]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert alone[0].token_ids[0] == first
