"""Logits processors: small objects, built with their parameters, mapping (ids, logits) -> logits.

`ids` is the (B, T) long tensor of every token so far (prompt included) and `logits` the (B, V)
float scores for the next token; every row of a batch is processed on its own. A processor
returns new scores (it never edits its input); filters and bans set removed tokens to -inf.
The loops apply a list of them in order, the list that `build_processors(config, prompt_len)`
makes.

Here, with Hugging Face semantics: the penalties and bans (repetition penalty, no-repeat n-grams,
bad words, min new tokens, suppressed tokens), OpenAI's presence/frequency penalties and logit
bias, and the sampling warpers (temperature, top-k, top-p, min-p, typical-p).

Where generation started: processors that count only *generated* tokens (min new tokens,
presence and frequency penalties) take `prompt_len` when built; `ids[:, prompt_len:]` are the
generated tokens. The loop knows the prompt length before the first step, so it builds the list
with `build_processors(config, prompt_len=len(prompt_ids))` and keeps ids as one growing buffer
from the prompt's first token (a sliding model window does not crop `ids`). A left-padded batch
passes its padded length as `prompt_len` and, for the repetition penalty, each row's
`padding_lengths`. Processors stay stateless: the same list serves every step.
"""
from __future__ import annotations

from typing import Protocol, Sequence

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




def build_processors(
    config: GenerationConfig,
    prompt_len: int | None = None,
    padding_lengths: Sequence[int] | torch.Tensor | None = None,
) -> list[LogitsProcessor]:
    """The processors `config` turns on, in the order they apply.

    The order is Hugging Face's (`GenerationMixin._get_logits_processor`, transformers 5.x):
    first the logits processors, which act in greedy decoding too: repetition_penalty,
    no_repeat_ngram_size, bad_words_ids, min_new_tokens (only with end-of-text ids to hold back),
    suppress_tokens; then the OpenAI options HF lacks (presence_penalty, frequency_penalty,
    logit_bias), where HF applies user-supplied processors. Then, only when sampling, the warpers:
    temperature, top_k, top_p, min_p, typical_p. With beam sampling (num_beams > 1) every filter
    keeps at least len(eot_ids) + 1 tokens (2 without eot_ids), as in HF.

    `prompt_len` is where generation started in the `ids` the processors will see (the padded
    length in a left-padded batch); it is needed (an error otherwise) only by min_new_tokens,
    presence_penalty and frequency_penalty. `padding_lengths` gives, per row of `ids`, how many
    left-padding ids it starts with: as HF does with the attention mask, the repetition penalty
    skips them (the other processors see padding like any token, as in HF).

    >>> build_processors(GenerationConfig(temperature=0.7, top_k=50, top_p=1.0))
    [TemperatureProcessor(0.7), TopKProcessor(50)]
    >>> build_processors(GenerationConfig(do_sample=False, top_k=50, repetition_penalty=1.2))
    [RepetitionPenaltyProcessor(1.2)]
    >>> build_processors(GenerationConfig(presence_penalty=0.5, min_p=0.1), prompt_len=7)
    [PresencePenaltyProcessor(0.5, prompt_len=7), MinPProcessor(0.1)]
    """
    needs_start = [
        name
        for name, on in [
            ("min_new_tokens", config.min_new_tokens > 0 and config.eot_ids),
            ("presence_penalty", config.presence_penalty != 0),
            ("frequency_penalty", config.frequency_penalty != 0),
        ]
        if on
    ]
    if needs_start and prompt_len is None:
        raise LmlabError(
            f"options that count generated tokens ({', '.join(needs_start)}) need to know where generation "
            "started: call build_processors(config, prompt_len=len(prompt_ids))"
        )
    processors: list[LogitsProcessor] = []
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyProcessor(config.repetition_penalty, padding_lengths))
    if config.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramProcessor(config.no_repeat_ngram_size))
    if config.bad_words_ids:
        processors.append(BadWordsProcessor(config.bad_words_ids, config.eot_ids))
    if config.min_new_tokens > 0 and config.eot_ids:
        processors.append(MinNewTokensProcessor(config.min_new_tokens, config.eot_ids, prompt_len))
    if config.suppress_tokens:
        processors.append(SuppressTokensProcessor(config.suppress_tokens))
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
        keep = len(config.eot_ids) + 1 if config.eot_ids else 2
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
