"""Logits processors: parity with Hugging Face's own classes, hand-checked OpenAI penalties,
parameter checks (once, in the config), the config options that turn them on, and the order
`build_processors` uses.

The Hugging Face classes in `transformers.generation.logits_process` are the reference: on random
ids and logits (several seeds, batch > 1) ours must give the same -inf positions and the same
numbers elsewhere. The full list that `build_processors` makes is checked against the list
`GenerationMixin._get_logits_processor` makes from the same options.
"""
from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.generate import GenerationConfig, build_processors, stream
from lmlab.generate.processors import (
    BadWordsProcessor,
    FrequencyPenaltyProcessor,
    LogitBiasProcessor,
    MinNewTokensProcessor,
    MinPProcessor,
    NoRepeatNGramProcessor,
    PresencePenaltyProcessor,
    RepetitionPenaltyProcessor,
    SuppressTokensProcessor,
    TemperatureProcessor,
    TopKProcessor,
    TopPProcessor,
    TypicalPProcessor,
)
from lmlab.generate.token_sets import counts_of

hf = pytest.importorskip("transformers.generation.logits_process")

BATCH, LENGTH, VOCAB = 4, 24, 32
SEEDS = range(5)


def random_inputs(seed: int, vocab_size: int = VOCAB, with_inf: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids (B, T) over a small vocabulary (so tokens and n-grams repeat) and logits (B, V)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size // 3, (BATCH, LENGTH), generator=generator)  # (B, T)
    logits = torch.randn(BATCH, vocab_size, generator=generator) * 3  # (B, V)
    if with_inf:  # as if an earlier filter ran
        logits[torch.rand(BATCH, vocab_size, generator=generator) < 0.3] = -math.inf
    return ids, logits


def assert_same_scores(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert torch.equal(ours == -math.inf, theirs == -math.inf), "different tokens removed"
    assert torch.equal(ours == math.inf, theirs == math.inf)
    finite = ours.isfinite()
    torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-6, atol=1e-6)


def bad_words_from(ids: torch.Tensor) -> list[list[int]]:
    """Bad words that some rows' endings complete, one single token, and the end-of-text id alone."""
    return [
        [int(ids[0, -1]), 5],  # row 0 ends with the prefix
        [int(ids[1, -2]), int(ids[1, -1]), 6],  # row 1 ends with this two-token prefix
        [int(ids[2, -1]), int(ids[2, -1]), 7],  # usually no match
        [9],
        [EOT],  # dropped: generation must be able to end
        list(range(LENGTH + 3)),  # longer than the ids: never matches
    ]


EOT = 3
PADDING = [0, 3, 12, LENGTH - 4]  # left-padding ids per row of a batch


def without_tokens(ids: torch.Tensor, padding: list[int]) -> torch.Tensor:
    """ids with each row's first `padding[row]` positions marked as holding no token (distinct
    negative ids), as the decoding loop marks left padding."""
    marks = -torch.arange(1, ids.shape[1] + 1).expand_as(ids)
    return torch.where(torch.arange(ids.shape[1])[None, :] < torch.tensor(padding)[:, None], marks, ids)


# name -> (ids -> (ours, Hugging Face's[, the ids ours is shown: left padding marked as no token]))
PARITY = {
    "repetition_penalty>1": lambda ids: (RepetitionPenaltyProcessor(1.3), hf.RepetitionPenaltyLogitsProcessor(1.3)),
    "repetition_penalty<1": lambda ids: (RepetitionPenaltyProcessor(0.7), hf.RepetitionPenaltyLogitsProcessor(0.7)),
    "repetition_penalty_skip": lambda ids: (
        RepetitionPenaltyProcessor(1.3),
        hf.RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=10),
        without_tokens(ids, [10] * BATCH),
    ),
    "repetition_penalty_padding": lambda ids: (
        RepetitionPenaltyProcessor(0.7),
        hf.RepetitionPenaltyLogitsProcessor(0.7, prompt_ignore_length=torch.tensor(PADDING)),
        without_tokens(ids, PADDING),
    ),
    "no_repeat_ngram=1": lambda ids: (NoRepeatNGramProcessor(1), hf.NoRepeatNGramLogitsProcessor(1)),
    "no_repeat_ngram=2": lambda ids: (NoRepeatNGramProcessor(2), hf.NoRepeatNGramLogitsProcessor(2)),
    "no_repeat_ngram=3": lambda ids: (NoRepeatNGramProcessor(3), hf.NoRepeatNGramLogitsProcessor(3)),
    "no_repeat_ngram>T": lambda ids: (NoRepeatNGramProcessor(LENGTH + 1), hf.NoRepeatNGramLogitsProcessor(LENGTH + 1)),
    "bad_words": lambda ids: (
        BadWordsProcessor(bad_words_from(ids), eot_ids=[EOT]),
        hf.NoBadWordsLogitsProcessor(bad_words_from(ids), eos_token_id=[EOT]),
    ),
    "min_new_tokens_before": lambda ids: (
        MinNewTokensProcessor(3, [EOT, 4], prompt_len=LENGTH - 2),
        hf.MinNewTokensLengthLogitsProcessor(LENGTH - 2, 3, [EOT, 4]),
    ),
    "min_new_tokens_after": lambda ids: (
        MinNewTokensProcessor(3, [EOT], prompt_len=LENGTH - 3),
        hf.MinNewTokensLengthLogitsProcessor(LENGTH - 3, 3, [EOT]),
    ),
    "suppress_tokens": lambda ids: (SuppressTokensProcessor([0, 7, 31]), hf.SuppressTokensLogitsProcessor([0, 7, 31])),
    "temperature": lambda ids: (TemperatureProcessor(0.7), hf.TemperatureLogitsWarper(0.7)),
    "top_k": lambda ids: (TopKProcessor(5), hf.TopKLogitsWarper(5)),
    "top_k_keep": lambda ids: (TopKProcessor(2, min_tokens_to_keep=4), hf.TopKLogitsWarper(2, min_tokens_to_keep=4)),
    "top_p": lambda ids: (TopPProcessor(0.9), hf.TopPLogitsWarper(0.9)),
    "top_p_small": lambda ids: (TopPProcessor(0.3), hf.TopPLogitsWarper(0.3)),
    "top_p_keep": lambda ids: (TopPProcessor(0.05, 3), hf.TopPLogitsWarper(0.05, min_tokens_to_keep=3)),
    "min_p": lambda ids: (MinPProcessor(0.1), hf.MinPLogitsWarper(0.1)),
    "min_p_strict": lambda ids: (MinPProcessor(0.9), hf.MinPLogitsWarper(0.9)),
    "min_p_keep": lambda ids: (MinPProcessor(1.0, 3), hf.MinPLogitsWarper(1.0, min_tokens_to_keep=3)),
    "typical_p": lambda ids: (TypicalPProcessor(0.9), hf.TypicalLogitsWarper(0.9)),
    "typical_p_small": lambda ids: (TypicalPProcessor(0.2), hf.TypicalLogitsWarper(0.2)),
    "typical_p_keep": lambda ids: (TypicalPProcessor(0.2, 3), hf.TypicalLogitsWarper(0.2, min_tokens_to_keep=3)),
}


@pytest.mark.parametrize("with_inf", [False, True], ids=["finite", "with_inf"])
@pytest.mark.parametrize("name", PARITY)
def test_parity_with_hugging_face(name, with_inf):
    for seed in SEEDS:
        ids, logits = random_inputs(seed, with_inf=with_inf)
        ours, theirs, *shown = PARITY[name](ids)
        assert_same_scores(ours(shown[0] if shown else ids, logits), theirs(ids.clone(), logits.clone()))


def test_parity_cases_actually_remove_and_keep_tokens():
    """Guard against a vacuous parity test: each ban/filter removes something somewhere, and
    never everything in a row."""
    for name, make in PARITY.items():
        if name in ("no_repeat_ngram>T", "min_new_tokens_after", "temperature") or "repetition" in name:
            continue
        removed = []
        for seed in SEEDS:
            ids, logits = random_inputs(seed)
            ours, _, *shown = make(ids)
            out = ours(shown[0] if shown else ids, logits)
            assert out.isfinite().any(dim=-1).all(), name
            removed.append((out == -math.inf).sum().item())
        assert sum(removed) > 0, f"{name} removed nothing"


# --- hand-checkable examples ----------------------------------------------------------------------


def test_presence_and_frequency_penalties_count_generated_tokens_only():
    # Prompt [4, 4, 4, 1]; generated [1, 2, 1, 1]: token 1 three times, token 2 once, 4 only in the prompt.
    ids = torch.tensor([[4, 4, 4, 1, 1, 2, 1, 1], [4, 4, 4, 1, 0, 0, 0, 0]])
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    presence = PresencePenaltyProcessor(0.5, prompt_len=4)(ids, logits)
    assert presence.tolist() == [[0.0, 0.5, 1.5, 3.0, 4.0], [-0.5, 1.0, 2.0, 3.0, 4.0]]
    frequency = FrequencyPenaltyProcessor(0.25, prompt_len=4)(ids, logits)
    assert frequency.tolist() == [[0.0, 0.25, 1.75, 3.0, 4.0], [-1.0, 1.0, 2.0, 3.0, 4.0]]
    # OpenAI's formula: mu[j] - c[j] * frequency - (c[j] > 0) * presence; negative values reward.
    both = FrequencyPenaltyProcessor(-1.0, prompt_len=4)(ids, PresencePenaltyProcessor(2.0, prompt_len=4)(ids, logits))
    assert both.tolist() == [[0.0, 1.0 - 2 + 3, 2.0 - 2 + 1, 3.0, 4.0], [0.0 - 2 + 4, 1.0, 2.0, 3.0, 4.0]]
    # Before anything is generated, nothing changes.
    assert torch.equal(PresencePenaltyProcessor(2.0, prompt_len=8)(ids, logits), logits)


def test_logit_bias_adds_per_token_and_accepts_json_keys():
    logits = torch.zeros(2, 4)
    config = GenerationConfig(logit_bias={"1": 100, 3: -2.5})  # JSON's string keys become ids here
    out = LogitBiasProcessor(config.logit_bias)(None, logits)
    assert out.tolist() == [[0.0, 100.0, 0.0, -2.5]] * 2
    assert torch.equal(LogitBiasProcessor([(1, 100), (3, -2.5)])(None, logits), out)


def test_positions_that_hold_no_token_count_as_nothing():
    """Left padding (negative ids) is never a repeat, an n-gram, a bad word's prefix or a count."""
    ids = torch.tensor([[-1, -2, -3, 4, 2]])
    marked_padding = torch.tensor([[2, 2, 2, 4, 2]])  # the same row with real tokens where the padding was
    logits = torch.zeros(1, 6)
    assert RepetitionPenaltyProcessor(2.0)(ids, logits + 1).tolist() == [[1, 1, 0.5, 1, 0.5, 1]]
    assert NoRepeatNGramProcessor(2)(ids, logits).isfinite().all()
    assert not NoRepeatNGramProcessor(2)(marked_padding, logits).isfinite().all()
    assert BadWordsProcessor([[2, 2, 4, 2, 5]])(ids, logits).isfinite().all()
    assert not BadWordsProcessor([[2, 2, 4, 2, 5]])(marked_padding, logits).isfinite().all()
    assert counts_of(ids, 6, torch.float32).tolist() == [[0, 0, 1, 0, 1, 0]]


def test_repetition_penalty_hits_each_seen_token_once():
    ids = torch.tensor([[1, 1, 1, 3]])
    out = RepetitionPenaltyProcessor(2.0)(ids, torch.tensor([[8.0, 8.0, 8.0, -8.0]]))
    assert out.tolist() == [[8.0, 4.0, 8.0, -16.0]]


def test_no_repeat_ngram_works_row_by_row():
    ids = torch.tensor([[1, 2, 1], [2, 1, 2]])  # row 0 bans 2 after "1"; row 1 bans 1 after "2"
    out = NoRepeatNGramProcessor(2)(ids, torch.zeros(2, 3))
    assert out.isinf().tolist() == [[False, False, True], [False, True, False]]


def test_min_new_tokens_counts_from_prompt_len():
    ban = MinNewTokensProcessor(2, eot_ids=[0], prompt_len=3)
    logits = torch.zeros(1, 2)
    assert ban(torch.zeros(1, 3, dtype=torch.long), logits).isinf().tolist() == [[True, False]]
    assert ban(torch.zeros(1, 4, dtype=torch.long), logits).isinf().tolist() == [[True, False]]
    assert ban(torch.zeros(1, 5, dtype=torch.long), logits).isinf().tolist() == [[False, False]]


# --- inputs untouched, parameters checked ---------------------------------------------------------

ALL_PROCESSORS = [
    RepetitionPenaltyProcessor(1.5),
    NoRepeatNGramProcessor(2),
    BadWordsProcessor([[1], [2, 3]]),
    MinNewTokensProcessor(50, [0], prompt_len=0),
    SuppressTokensProcessor([4]),
    PresencePenaltyProcessor(1.0, prompt_len=2),
    FrequencyPenaltyProcessor(1.0, prompt_len=2),
    LogitBiasProcessor({5: 3.0}),
    TemperatureProcessor(0.5),
    TopKProcessor(3),
    TopPProcessor(0.5),
    MinPProcessor(0.2),
    TypicalPProcessor(0.5),
]


@pytest.mark.parametrize("processor", ALL_PROCESSORS, ids=lambda p: type(p).__name__)
def test_processors_never_modify_their_inputs(processor):
    ids, logits = random_inputs(0, with_inf=True)
    ids_before, logits_before = ids.clone(), logits.clone()
    out = processor(ids, logits)
    assert out.shape == logits.shape and out.dtype == logits.dtype
    assert torch.equal(ids, ids_before) and torch.equal(logits, logits_before)
    if out is not logits:  # a processor with nothing to do may hand back its input; none edits it
        out.add_(1)
        assert torch.equal(logits, logits_before)


@pytest.mark.parametrize(
    "options, name",
    [  # what the processors take, each checked once, by GenerationConfig
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": -1.2}, "repetition_penalty"),
        ({"repetition_penalty": math.inf}, "repetition_penalty"),
        ({"repetition_penalty": "1.2"}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": 2.0}, "no_repeat_ngram_size"),
        ({"bad_words_ids": [[]]}, "bad_words_ids"),
        ({"bad_words_ids": [1, 2]}, "bad_words_ids"),
        ({"bad_words_ids": [[-1]]}, "bad_words_ids"),
        ({"bad_words_ids": [[1]], "eot_ids": ["x"]}, "eot_ids"),
        ({"min_new_tokens": -1}, "min_new_tokens"),
        ({"suppress_tokens": [1, -2]}, "suppress_tokens"),
        ({"suppress_tokens": "ab"}, "suppress_tokens"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"presence_penalty": math.nan}, "presence_penalty"),
        ({"frequency_penalty": -2.01}, "frequency_penalty"),
        ({"logit_bias": {1: 101}}, "logit_bias"),
        ({"logit_bias": {-1: 1}}, "logit_bias"),
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"logit_bias": 5}, "logit_bias"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_k": -3}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"typical_p": 0.0}, "typical_p"),
        ({"typical_p": True}, "typical_p"),
    ],
)
def test_processor_parameters_are_checked_by_the_config_naming_them(options, name):
    with pytest.raises(LmlabError, match=name) as error:
        GenerationConfig.from_dict(options)
    assert "\n" not in str(error.value) and name in error.value.params


def test_values_that_mean_off_build_no_processor():
    off = dict(no_repeat_ngram_size=0, bad_words_ids=[], suppress_tokens=[], logit_bias={}, top_k=0, min_p=0,
               typical_p=1.0, top_p=1.0, repetition_penalty=1.0, min_new_tokens=0)
    assert build_processors(GenerationConfig(**off), prompt_len=0) == []
    assert build_processors(GenerationConfig(min_new_tokens=2), prompt_len=0) == []  # no end-of-text to hold back


@pytest.mark.parametrize(
    "options, name",
    [
        ({"suppress_tokens": [VOCAB]}, "suppress_tokens"),
        ({"bad_words_ids": [[1, VOCAB + 5]]}, "bad_words_ids"),
        ({"logit_bias": {VOCAB: 1.0}}, "logit_bias"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_an_error_when_the_list_is_built(options, name):
    with pytest.raises(LmlabError, match=f"{name}.*{VOCAB} tokens"):
        build_processors(GenerationConfig(**options), prompt_len=0, vocab_size=VOCAB)
    assert build_processors(GenerationConfig(**options), prompt_len=0, vocab_size=VOCAB + 6)  # they fit a larger one


# --- config options -------------------------------------------------------------------------------

NEW_OPTIONS = dict(
    min_new_tokens=5,
    min_p=0.05,
    typical_p=0.9,
    repetition_penalty=1.2,
    presence_penalty=0.5,
    frequency_penalty=-0.5,
    no_repeat_ngram_size=3,
    bad_words_ids=[[1, 2], [3]],
    suppress_tokens=[7, 8],
    logit_bias={"9": -100, 4: 2},
    num_beams=4,
    length_penalty=0.8,
    early_stopping="never",
    num_return_sequences=2,
    logprobs=True,
    top_logprobs=5,
)


def test_config_accepts_every_new_option_by_name():
    config = GenerationConfig.from_dict(NEW_OPTIONS)
    assert config.bad_words_ids == ((1, 2), (3,)) and config.suppress_tokens == (7, 8)
    assert config.logit_bias == ((4, 2.0), (9, -100.0))
    assert config.early_stopping == "never" and config.num_beams == 4 and config.top_logprobs == 5
    assert isinstance(config.min_p, float) and isinstance(config.presence_penalty, float)
    assert config.replace() == config  # normalized values pass the checks again
    assert hash(config) == hash(config.replace())  # still hashable with a logit bias
    assert GenerationConfig(logit_bias={}).logit_bias is None
    defaults = GenerationConfig()
    assert (defaults.min_new_tokens, defaults.repetition_penalty, defaults.bad_words_ids, defaults.num_beams) == (
        0, None, (), 1
    )
    assert build_processors(GenerationConfig(bad_words_ids=None, suppress_tokens=None, logit_bias=None)) == []


@pytest.mark.parametrize(
    "options, name",
    [
        ({"min_new_tokens": -1}, "min_new_tokens"),
        ({"min_p": 1.5}, "min_p"),
        ({"min_p": "0.1"}, "min_p"),
        ({"typical_p": 0}, "typical_p"),
        ({"typical_p": 1.1}, "typical_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": math.nan}, "repetition_penalty"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": 1.5}, "no_repeat_ngram_size"),
        ({"bad_words_ids": [1, 2]}, "bad_words_ids"),
        ({"bad_words_ids": [[]]}, "bad_words_ids"),
        ({"bad_words_ids": "abc"}, "bad_words_ids"),
        ({"suppress_tokens": [-1]}, "suppress_tokens"),
        ({"suppress_tokens": 3}, "suppress_tokens"),
        ({"logit_bias": {"1": 150}}, "logit_bias"),
        ({"logit_bias": {"one": 1}}, "logit_bias"),
        ({"logit_bias": {1: 1, "1": 2}}, "logit_bias"),
        ({"logit_bias": [1, 2]}, "logit_bias"),
        ({"num_beams": 0}, "num_beams"),
        ({"length_penalty": math.inf}, "length_penalty"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"early_stopping": 1}, "early_stopping"),
        ({"num_return_sequences": 0}, "num_return_sequences"),
        ({"num_return_sequences": 2, "do_sample": False}, "num_return_sequences"),
        ({"num_return_sequences": 2, "temperature": 0}, "num_return_sequences"),
        ({"num_return_sequences": 5, "num_beams": 4}, "num_return_sequences"),
        ({"num_return_sequences": 5, "num_beams": 4, "do_sample": False}, "num_return_sequences"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_config_rejects_bad_new_options_naming_them(options, name):
    with pytest.raises(LmlabError, match=name) as error:
        GenerationConfig.from_dict(options)
    assert "\n" not in str(error.value)


def test_config_allows_what_hugging_face_allows_for_return_sequences():
    assert GenerationConfig(num_return_sequences=3).num_return_sequences == 3  # sampling
    assert GenerationConfig(num_return_sequences=3, num_beams=3, do_sample=False).num_beams == 3


# --- build_processors -----------------------------------------------------------------------------


def test_build_processors_needs_prompt_len_only_for_generated_token_counts():
    for options in ({"presence_penalty": 0.5}, {"frequency_penalty": 0.5}, {"min_new_tokens": 2, "eot_ids": [0]}):
        with pytest.raises(LmlabError, match=f"{next(iter(options))}.*prompt_len"):
            build_processors(GenerationConfig(**options))
    # Everything else works without it, as the loop calls it today.
    config = GenerationConfig(repetition_penalty=1.1, no_repeat_ngram_size=2, logit_bias={1: 1}, min_new_tokens=3)
    assert [type(p) for p in build_processors(config)] == [
        RepetitionPenaltyProcessor, NoRepeatNGramProcessor, LogitBiasProcessor
    ]  # min_new_tokens without end-of-text ids has nothing to hold back (as in HF)


def test_build_processors_greedy_keeps_penalties_and_drops_warpers():
    config = GenerationConfig.from_dict({**NEW_OPTIONS, "do_sample": False, "eot_ids": [0], "top_k": 5})
    assert [type(p) for p in build_processors(config, prompt_len=3)] == [
        RepetitionPenaltyProcessor,
        NoRepeatNGramProcessor,
        BadWordsProcessor,
        MinNewTokensProcessor,
        SuppressTokensProcessor,
        PresencePenaltyProcessor,
        FrequencyPenaltyProcessor,
        LogitBiasProcessor,
    ]
    assert build_processors(GenerationConfig(repetition_penalty=1.0, min_p=0.0, typical_p=1.0)) == []


# Our class for each of Hugging Face's.
HF_NAMES = {
    "RepetitionPenaltyLogitsProcessor": RepetitionPenaltyProcessor,
    "NoRepeatNGramLogitsProcessor": NoRepeatNGramProcessor,
    "NoBadWordsLogitsProcessor": BadWordsProcessor,
    "MinNewTokensLengthLogitsProcessor": MinNewTokensProcessor,
    "SuppressTokensLogitsProcessor": SuppressTokensProcessor,
    "TemperatureLogitsWarper": TemperatureProcessor,
    "TopKLogitsWarper": TopKProcessor,
    "TopPLogitsWarper": TopPProcessor,
    "MinPLogitsWarper": MinPProcessor,
    "TypicalLogitsWarper": TypicalPProcessor,
}


def hugging_face_processors(config: GenerationConfig, prompt_len: int, custom: list, mask: torch.Tensor) -> list:
    """The list `GenerationMixin._get_logits_processor` builds for the same options and attention
    `mask`, with `custom` passed as user processors (where HF would put our OpenAI-only ones)."""
    from transformers import GenerationConfig as HFGenerationConfig
    from transformers.generation.logits_process import LogitsProcessorList
    from transformers.generation.utils import GenerationMixin

    hf_config = HFGenerationConfig(
        do_sample=not config.greedy,
        temperature=config.temperature,
        top_k=config.top_k or 0,
        top_p=config.top_p,
        min_p=config.min_p,
        typical_p=config.typical_p,
        repetition_penalty=config.repetition_penalty,
        no_repeat_ngram_size=config.no_repeat_ngram_size,
        bad_words_ids=[list(w) for w in config.bad_words_ids] or None,
        min_new_tokens=config.min_new_tokens,
        suppress_tokens=list(config.suppress_tokens) or None,
        num_beams=config.num_beams,
        num_return_sequences=config.num_return_sequences,
        eos_token_id=list(config.eot_ids),
    )
    hf_config._eos_token_tensor = torch.tensor(config.eot_ids)  # what generate() sets up
    model = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=False))
    model._merge_criteria_processor_list = partial(GenerationMixin._merge_criteria_processor_list, model)
    return list(
        GenerationMixin._get_logits_processor(
            model, hf_config, input_ids_seq_length=prompt_len, logits_processor=LogitsProcessorList(custom),
            device="cpu", model_kwargs={"attention_mask": mask},
        )
    )


@pytest.mark.parametrize("num_beams", [1, 3])
def test_build_processors_matches_hugging_face_order_and_output(num_beams):
    config = GenerationConfig.from_dict(
        {**NEW_OPTIONS, "temperature": 0.8, "top_k": 20, "top_p": 0.95, "min_p": 0.02, "typical_p": 0.99,
         "bad_words_ids": [[1, 2], [3], [EOT]], "eot_ids": [EOT, 4], "num_beams": num_beams, "do_sample": True}
    )
    prompt_len = LENGTH - 2
    mask = torch.arange(LENGTH)[None, :] >= torch.tensor(PADDING)[:, None]  # (B, T) left padding
    ours = build_processors(config, prompt_len=prompt_len)
    openai_only = [p for p in ours if type(p) not in HF_NAMES.values()]
    theirs = hugging_face_processors(config, prompt_len, custom=openai_only, mask=mask.long())
    assert [type(p) for p in ours] == [HF_NAMES.get(type(p).__name__, type(p)) for p in theirs]
    keep = [p.min_tokens_to_keep for p in ours if hasattr(p, "min_tokens_to_keep")]
    assert keep == [1 if num_beams == 1 else 3] * 4
    for seed in SEEDS:
        ids, logits = random_inputs(seed)
        # Hugging Face reads the padding as tokens (its repetition penalty skips it by the mask): give
        # it ids no prompt holds, distinct per position, so its n-grams and bad words cannot match
        # them; ours is shown the padding as positions that hold no token.
        unmatched = VOCAB // 3 + torch.arange(LENGTH).expand_as(ids) % (VOCAB - VOCAB // 3)
        theirs_ids = torch.where(mask, ids, unmatched)
        expected = logits.clone()
        for processor in theirs:
            expected = processor(theirs_ids, expected)
        got = logits
        for processor in ours:
            got = processor(without_tokens(ids, PADDING), got)
        assert_same_scores(got, expected)


class PreferLowIds(torch.nn.Module):
    """A model contract stand-in: next-token logits always favour lower ids (logit = -id)."""

    context_len = None
    config = SimpleNamespace(vocab_size=6)

    def step(self, ids: torch.Tensor, state: object, mask: torch.Tensor | None = None):
        return -torch.arange(6, dtype=torch.float32)[None], None  # (1, V)


def test_penalties_and_bans_work_through_the_loop():
    config = GenerationConfig(max_new_tokens=4, do_sample=False, no_repeat_ngram_size=1, suppress_tokens=[1])
    new = [e.token_id for e in stream(PreferLowIds(), [[0]], config) if e.token_id is not None]
    assert new == [2, 3, 4, 5]  # 0 is in the prompt, 1 suppressed
