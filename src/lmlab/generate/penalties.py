"""Penalties and bans, applied in greedy decoding and sampling alike (see processors.py).

Hugging Face's repetition penalty, no-repeat n-grams, bad words, min new tokens and suppressed
tokens; OpenAI's presence and frequency penalties and logit bias.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch

from lmlab.errors import LmlabError
from lmlab.generate.checks import (ban, check_in_vocabulary, check_int, check_token_ids, counts_of, is_number,
                                   mask_of, processor_repr)
from lmlab.generate.config import LOGIT_BIAS_RANGE, PENALTY_RANGE, token_bias_pairs


class RepetitionPenaltyProcessor:
    """For every token already in `ids` (prompt included, once however often it occurs): a
    negative logit is multiplied by `penalty`, a positive one divided by it. `penalty` > 1
    discourages repeats, < 1 encourages them (Hugging Face's repetition_penalty, CTRL paper).

    `prompt_ignore_length` (HF's name) skips leading ids: one count for every row, or one per
    row, as for the left padding of a batch, which HF leaves out of the penalty.

    >>> ids = torch.tensor([[0, 2, 2], [0, 0, 1]])  # row 1: two padding ids (0), then token 1
    >>> RepetitionPenaltyProcessor(2.0, prompt_ignore_length=[0, 2])(ids, torch.tensor([[4.0, 1.0, -1.0]] * 2))
    tensor([[ 2.0000,  1.0000, -2.0000],
            [ 4.0000,  0.5000, -1.0000]])
    """

    def __init__(
        self, penalty: float, prompt_ignore_length: int | Sequence[int] | torch.Tensor | None = None
    ) -> None:
        if not is_number(penalty) or penalty <= 0:
            raise LmlabError(f"repetition_penalty must be a number > 0 (1 is no penalty), got {penalty!r}")
        self.penalty = float(penalty)
        ignore = prompt_ignore_length
        if isinstance(ignore, torch.Tensor):
            if ignore.dim() != 1:
                shape = tuple(ignore.shape)
                raise LmlabError(f"prompt_ignore_length must be one integer or one per row, got shape {shape}")
            ignore = ignore.tolist()
        self.prompt_ignore_length: int | torch.Tensor | None = None  # a count for all rows, or (B,)
        if isinstance(ignore, int) and not isinstance(ignore, bool):
            self.prompt_ignore_length = check_int("prompt_ignore_length", ignore, 0)
        elif ignore is not None:
            per_row = check_token_ids("prompt_ignore_length", ignore, what="counts, one per row")
            self.prompt_ignore_length = torch.tensor(per_row, dtype=torch.long)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        vocab_size = logits.shape[-1]
        ignore = self.prompt_ignore_length
        if isinstance(ignore, int):
            ids = ids[:, ignore:]
        elif ignore is not None:
            if ignore.shape[0] != ids.shape[0]:
                raise LmlabError(f"prompt_ignore_length has {ignore.shape[0]} rows but ids has {ids.shape[0]} rows")
            positions = torch.arange(ids.shape[-1], device=ids.device)
            ids = ids.masked_fill(positions < ignore.to(ids.device)[:, None], vocab_size)  # (B, T); skipped ids
        seen = mask_of(ids, vocab_size)  # (B, V)
        penalized = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen, penalized, logits)

    def __repr__(self) -> str:
        ignore = self.prompt_ignore_length
        if ignore is None:
            return processor_repr("RepetitionPenaltyProcessor", self.penalty)
        shown = ignore if isinstance(ignore, int) else ignore.tolist()
        return processor_repr("RepetitionPenaltyProcessor", self.penalty, prompt_ignore_length=shown)


class NoRepeatNGramProcessor:
    """Ban every token that would complete an n-gram (`ngram_size` tokens) already in the row:
    if the last n-1 tokens occurred before, whatever followed them then is -inf now.

    >>> ids = torch.tensor([[1, 2, 3, 1]])  # 2-grams: (1, 2) (2, 3) (3, 1); last token 1
    >>> NoRepeatNGramProcessor(2)(ids, torch.zeros(1, 4))
    tensor([[0., 0., -inf, 0.]])
    """

    def __init__(self, ngram_size: int) -> None:
        self.ngram_size = check_int("no_repeat_ngram_size", ngram_size, 1)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        n, length = self.ngram_size, ids.shape[-1]
        if length < n:
            return logits  # no complete n-gram yet
        suffix = ids[:, length - n + 1 :]  # (B, n-1): the start of the n-gram the next token completes
        ngrams = ids.unfold(1, n, 1)  # (B, T-n+1, n)
        repeats = (ngrams[..., :-1] == suffix[:, None, :]).all(dim=-1)  # (B, T-n+1)
        vocab_size = logits.shape[-1]
        banned = torch.where(repeats, ngrams[..., -1], vocab_size)  # a non-repeat bans the spare column
        return logits.masked_fill(mask_of(banned, vocab_size), -math.inf)

    def __repr__(self) -> str:
        return processor_repr("NoRepeatNGramProcessor", self.ngram_size)


class BadWordsProcessor:
    """Never produce the token sequences in `bad_words_ids`: a one-token sequence is always
    banned; a longer one bans its last token whenever the rest of it ends the row. As in Hugging
    Face, a sequence that is just one of the `eot_ids` is dropped (generation must be able to end).

    >>> ids = torch.tensor([[5, 1], [5, 2]])
    >>> BadWordsProcessor([[0], [1, 3]])(ids, torch.zeros(2, 4))
    tensor([[-inf, 0., 0., -inf],
            [-inf, 0., 0., 0.]])
    """

    def __init__(self, bad_words_ids: Sequence[Sequence[int]], eot_ids: Sequence[int] = ()) -> None:
        message = f"bad_words_ids must be a non-empty list of non-empty token-id lists, got {bad_words_ids!r}"
        try:
            words = [check_token_ids("bad_words_ids", word, allow_empty=False) for word in bad_words_ids]
        except (TypeError, LmlabError):
            raise LmlabError(message) from None
        if not words or isinstance(bad_words_ids, str):
            raise LmlabError(message)
        eot = set(check_token_ids("eot_ids", eot_ids))
        words = [w for w in words if not (len(w) == 1 and w[0] in eot)]
        self.bad_words_ids = tuple(words)
        self.single = sorted({w[0] for w in words if len(w) == 1})
        self.multi = [w for w in words if len(w) > 1]

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        check_in_vocabulary("bad_words_ids", (i for w in self.bad_words_ids for i in w), logits.shape[-1])
        banned = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
        banned[:, self.single] = True
        for word in self.multi:
            prefix = word[:-1]
            if len(prefix) <= ids.shape[-1]:
                ends_with_prefix = (ids[:, -len(prefix) :] == torch.tensor(prefix, device=ids.device)).all(dim=-1)
                banned[:, word[-1]] |= ends_with_prefix
        return logits.masked_fill(banned, -math.inf)

    def __repr__(self) -> str:
        return processor_repr("BadWordsProcessor", [list(w) for w in self.bad_words_ids])


class MinNewTokensProcessor:
    """Keep the `eot_ids` at -inf until `min_new_tokens` tokens have been generated after the
    first `prompt_len` ids (Hugging Face's min_new_tokens).

    >>> ban_eot = MinNewTokensProcessor(2, eot_ids=[3], prompt_len=2)
    >>> ban_eot(torch.tensor([[7, 7, 1]]), torch.zeros(1, 4))  # one new token so far
    tensor([[0., 0., 0., -inf]])
    >>> ban_eot(torch.tensor([[7, 7, 1, 2]]), torch.zeros(1, 4))
    tensor([[0., 0., 0., 0.]])
    """

    def __init__(self, min_new_tokens: int, eot_ids: Sequence[int], prompt_len: int) -> None:
        self.min_new_tokens = check_int("min_new_tokens", min_new_tokens, 0)
        self.eot_ids = check_token_ids("eot_ids", eot_ids, allow_empty=False)
        self.prompt_len = check_int("prompt_len", prompt_len, 0)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] - self.prompt_len >= self.min_new_tokens:
            return logits
        return ban(logits, [i for i in self.eot_ids if i < logits.shape[-1]])

    def __repr__(self) -> str:
        return processor_repr(
            "MinNewTokensProcessor", self.min_new_tokens, eot_ids=list(self.eot_ids), prompt_len=self.prompt_len
        )


class SuppressTokensProcessor:
    """Never produce the tokens `token_ids` (Hugging Face's suppress_tokens).

    >>> SuppressTokensProcessor([0, 2])(None, torch.ones(1, 3))
    tensor([[-inf, 1., -inf]])
    """

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = check_token_ids("suppress_tokens", token_ids, allow_empty=False)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        check_in_vocabulary("suppress_tokens", self.token_ids, logits.shape[-1])
        return ban(logits, self.token_ids)

    def __repr__(self) -> str:
        return processor_repr("SuppressTokensProcessor", list(self.token_ids))


def _check_penalty(name: str, value: object) -> float:
    low, high = PENALTY_RANGE
    if not is_number(value) or not low <= value <= high:  # type: ignore[operator]
        raise LmlabError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)  # type: ignore[arg-type]


class PresencePenaltyProcessor:
    """Subtract `presence_penalty` (-2..2) from the logit of every token that occurs among the
    generated tokens `ids[:, prompt_len:]` (OpenAI's presence_penalty; the prompt does not count).

    >>> ids = torch.tensor([[2, 2, 1, 1, 1]])  # prompt [2, 2], generated [1, 1, 1]
    >>> PresencePenaltyProcessor(0.5, prompt_len=2)(ids, torch.zeros(1, 3))
    tensor([[ 0.0000, -0.5000,  0.0000]])
    """

    def __init__(self, presence_penalty: float, prompt_len: int) -> None:
        self.presence_penalty = _check_penalty("presence_penalty", presence_penalty)
        self.prompt_len = check_int("prompt_len", prompt_len, 0)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        present = mask_of(ids[:, self.prompt_len :], logits.shape[-1])  # (B, V)
        return logits - self.presence_penalty * present.to(logits.dtype)

    def __repr__(self) -> str:
        return processor_repr("PresencePenaltyProcessor", self.presence_penalty, prompt_len=self.prompt_len)


class FrequencyPenaltyProcessor:
    """Subtract `frequency_penalty` (-2..2) times its count among the generated tokens
    `ids[:, prompt_len:]` from each token's logit (OpenAI's frequency_penalty).

    >>> ids = torch.tensor([[2, 2, 1, 1, 1]])  # prompt [2, 2], generated [1, 1, 1]
    >>> FrequencyPenaltyProcessor(0.5, prompt_len=2)(ids, torch.zeros(1, 3))
    tensor([[ 0.0000, -1.5000,  0.0000]])
    """

    def __init__(self, frequency_penalty: float, prompt_len: int) -> None:
        self.frequency_penalty = _check_penalty("frequency_penalty", frequency_penalty)
        self.prompt_len = check_int("prompt_len", prompt_len, 0)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        counts = counts_of(ids[:, self.prompt_len :], logits.shape[-1], logits.dtype)  # (B, V)
        return logits - self.frequency_penalty * counts

    def __repr__(self) -> str:
        return processor_repr("FrequencyPenaltyProcessor", self.frequency_penalty, prompt_len=self.prompt_len)


class LogitBiasProcessor:
    """Add a fixed bias (-100..100) to some tokens' logits: OpenAI's logit_bias, given as
    {token_id: bias} (JSON's string keys are fine). -100 effectively bans a token, 100 forces it.

    >>> LogitBiasProcessor({0: -100, "2": 1.5})(None, torch.zeros(1, 3))
    tensor([[-100.0000,    0.0000,    1.5000]])
    """

    def __init__(self, logit_bias: Mapping[int | str, float] | Iterable[tuple[int, float]]) -> None:
        pairs = token_bias_pairs("logit_bias", logit_bias)
        if not pairs:
            low, high = LOGIT_BIAS_RANGE
            raise LmlabError(
                f"logit_bias must give at least one token id a bias in [{low:g}, {high:g}], got {logit_bias!r}"
            )
        self.logit_bias = dict(pairs)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        check_in_vocabulary("logit_bias", self.logit_bias, logits.shape[-1])
        index = torch.tensor(list(self.logit_bias), dtype=torch.long, device=logits.device)
        bias = torch.tensor(list(self.logit_bias.values()), dtype=logits.dtype, device=logits.device)
        return logits.index_add(-1, index, bias.expand(*logits.shape[:-1], -1))

    def __repr__(self) -> str:
        return processor_repr("LogitBiasProcessor", self.logit_bias)
