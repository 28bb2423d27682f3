"""Logits processors: small objects, built with their parameters, mapping (ids, logits) -> logits.

`ids` is the (B, T) long tensor of every token so far (prompt included) and `logits` the (B, V)
float scores for the next token; every row of a batch is processed on its own. In `ids` a
negative id marks a position that holds no token — the left padding of a batch of prompts of
unequal length — so no processor counts, matches or bans it, and a prompt in a batch gives what
it gives alone. A processor returns new scores (it never edits its input); filters and bans set
removed tokens to -inf. The loop (engine.py) applies the list `build_processors` makes, in order.

Here, with Hugging Face semantics: the penalties and bans (penalties.py: repetition penalty,
no-repeat n-grams, bad words, min new tokens, suppressed tokens, and OpenAI's presence and
frequency penalties and logit bias) and the sampling warpers (warpers.py: temperature, top-k,
top-p, min-p, typical-p). Options are checked once, by `GenerationConfig`; token ids against the
vocabulary once, here, when the list is built.

Where generation started: processors that count only *generated* tokens (min new tokens,
presence and frequency penalties) take `prompt_len` when built; `ids[:, prompt_len:]` are the
generated tokens (a left-padded batch passes its padded width). Processors stay stateless: the
same list serves every step.
"""
from __future__ import annotations

from typing import Iterable, Protocol, Sequence

import torch

from lmlab.errors import LmlabError
from lmlab.generate.config import GenerationConfig
from lmlab.generate.penalties import (BadWordsProcessor, FrequencyPenaltyProcessor, LogitBiasProcessor,
                                      MinNewTokensProcessor, NoRepeatNGramProcessor, PresencePenaltyProcessor,
                                      RepetitionPenaltyProcessor, SuppressTokensProcessor)
from lmlab.generate.warpers import (MinPProcessor, TemperatureProcessor, TopKProcessor, TopPProcessor,
                                    TypicalPProcessor)

__all__ = ["LogitsProcessor", "build_processors", "BadWordsProcessor", "FrequencyPenaltyProcessor",
           "LogitBiasProcessor", "MinNewTokensProcessor", "NoRepeatNGramProcessor", "PresencePenaltyProcessor",
           "RepetitionPenaltyProcessor", "SuppressTokensProcessor", "MinPProcessor", "TemperatureProcessor",
           "TopKProcessor", "TopPProcessor", "TypicalPProcessor"]


class LogitsProcessor(Protocol):
    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


def _check_in_vocabulary(name: str, token_ids: Iterable[int], vocab_size: int | None) -> None:
    outside = sorted({i for i in token_ids if vocab_size is not None and i >= vocab_size})
    if outside:
        raise LmlabError(f"{name} has token id(s) {outside[:10]} but the model's vocabulary has {vocab_size} tokens",
                         params=(name,))


def build_processors(
    config: GenerationConfig,
    prompt_len: int | None = None,
    vocab_size: int | None = None,
    eot_ids: Sequence[int] | None = None,
    never: Sequence[int] = (),
) -> list[LogitsProcessor]:
    """The processors `config` turns on, in the order they apply.

    The order is Hugging Face's (`GenerationMixin._get_logits_processor`, transformers 5.x):
    first the logits processors, which act in greedy decoding too: repetition_penalty,
    no_repeat_ngram_size, bad_words_ids, min_new_tokens (only with end-of-text ids to hold back),
    suppress_tokens; then the OpenAI options HF lacks (presence_penalty, frequency_penalty,
    logit_bias), where HF applies user-supplied processors. Then, only when sampling, the warpers:
    temperature, top_k, top_p, min_p, typical_p. With beam sampling (num_beams > 1) every filter
    keeps at least len(eot_ids) + 1 tokens (2 without eot_ids), as in HF.

    `prompt_len` is where generation started in the `ids` the processors will see; it is needed
    (an error otherwise) only by min_new_tokens, presence_penalty and frequency_penalty.
    `vocab_size`, when given, is the width of the logits: token ids in the options must be below
    it (checked here, once). `eot_ids` are the ids that end a sequence (default `config.eot_ids`;
    the engine adds the tokenizer's). `never` are more ids never to produce (a model's padded
    embedding rows, which no tokenizer id reaches); they join suppress_tokens.

    >>> build_processors(GenerationConfig(temperature=0.7, top_k=50, top_p=1.0))
    [TemperatureProcessor(0.7), TopKProcessor(50)]
    >>> build_processors(GenerationConfig(do_sample=False, top_k=50, repetition_penalty=1.2))
    [RepetitionPenaltyProcessor(1.2)]
    >>> build_processors(GenerationConfig(presence_penalty=0.5, min_p=0.1), prompt_len=7)
    [PresencePenaltyProcessor(0.5, prompt_len=7), MinPProcessor(0.1)]
    """
    eot_ids = tuple(config.eot_ids if eot_ids is None else eot_ids)
    counts_generated = [name for name, on in [("min_new_tokens", config.min_new_tokens > 0 and eot_ids),
                                              ("presence_penalty", config.presence_penalty != 0),
                                              ("frequency_penalty", config.frequency_penalty != 0)] if on]
    if counts_generated and prompt_len is None:
        raise LmlabError(
            f"options that count generated tokens ({', '.join(counts_generated)}) need to know where generation "
            "started: call build_processors(config, prompt_len=len(prompt_ids))"
        )
    _check_in_vocabulary("bad_words_ids", (i for word in config.bad_words_ids for i in word), vocab_size)
    _check_in_vocabulary("suppress_tokens", config.suppress_tokens, vocab_size)
    _check_in_vocabulary("logit_bias", (i for i, _ in config.logit_bias or ()), vocab_size)
    suppressed = sorted({*config.suppress_tokens, *never})

    processors: list[LogitsProcessor] = []
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyProcessor(config.repetition_penalty))
    if config.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramProcessor(config.no_repeat_ngram_size))
    if config.bad_words_ids:
        processors.append(BadWordsProcessor(config.bad_words_ids, eot_ids))
    if config.min_new_tokens > 0 and eot_ids:
        in_vocabulary = [i for i in eot_ids if vocab_size is None or i < vocab_size]
        processors.append(MinNewTokensProcessor(config.min_new_tokens, in_vocabulary, prompt_len))
    if suppressed:
        processors.append(SuppressTokensProcessor(suppressed))
    if config.presence_penalty != 0:
        processors.append(PresencePenaltyProcessor(config.presence_penalty, prompt_len))
    if config.frequency_penalty != 0:
        processors.append(FrequencyPenaltyProcessor(config.frequency_penalty, prompt_len))
    if config.logit_bias:
        processors.append(LogitBiasProcessor(config.logit_bias))
    if config.greedy:
        return processors
    # Beam sampling must leave each beam a token that is not end-of-text.
    keep = 1
    if config.num_beams > 1:
        keep = len(eot_ids) + 1 if eot_ids else 2
    if config.temperature != 1.0:
        processors.append(TemperatureProcessor(config.temperature))
    if config.top_k:
        processors.append(TopKProcessor(config.top_k, keep))
    if config.top_p is not None and config.top_p < 1.0:
        processors.append(TopPProcessor(config.top_p, keep))
    if config.min_p:
        processors.append(MinPProcessor(config.min_p, keep))
    if config.typical_p is not None and config.typical_p < 1.0:
        processors.append(TypicalPProcessor(config.typical_p, keep))
    return processors
