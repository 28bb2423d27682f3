"""Penalties and bans, applied in greedy decoding and sampling alike (see processors.py).

Hugging Face's repetition penalty, no-repeat n-grams, bad words, min new tokens and suppressed
tokens; OpenAI's presence and frequency penalties and logit bias. Each is built with parameters
that `GenerationConfig` has already checked, and token ids that `build_processors` has checked
against the vocabulary: nothing here checks them again. In `ids`, a negative id marks a position
that holds no token (left padding): it matches no token and no other position.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from lmlab.generate.token_sets import ban, counts_of, mask_of, processor_repr


class RepetitionPenaltyProcessor:
    """For every token already in `ids` (prompt included, once however often it occurs): a
    negative logit is multiplied by `penalty`, a positive one divided by it. `penalty` > 1
    discourages repeats, < 1 encourages them (Hugging Face's repetition_penalty, CTRL paper).
    Positions that hold no token (negative ids: the left padding of a batch) add nothing, as
    Hugging Face leaves the padding out of the penalty.

    >>> ids = torch.tensor([[0, 2, 2], [-1, -2, 1]])  # row 1: two positions of padding, then token 1
    >>> RepetitionPenaltyProcessor(2.0)(ids, torch.tensor([[4.0, 1.0, -1.0]] * 2))
    tensor([[ 2.0000,  1.0000, -2.0000],
            [ 4.0000,  0.5000, -1.0000]])
    """

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = mask_of(ids, logits.shape[-1])  # (B, V)
        penalized = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen, penalized, logits)

    def __repr__(self) -> str:
        return processor_repr("RepetitionPenaltyProcessor", self.penalty)


class NoRepeatNGramProcessor:
    """Ban every token that would complete an n-gram (`ngram_size` tokens) already in the row:
    if the last n-1 tokens occurred before, whatever followed them then is -inf now.

    >>> ids = torch.tensor([[1, 2, 3, 1]])  # 2-grams: (1, 2) (2, 3) (3, 1); last token 1
    >>> NoRepeatNGramProcessor(2)(ids, torch.zeros(1, 4))
    tensor([[0., 0., -inf, 0.]])
    """

    def __init__(self, ngram_size: int) -> None:
        self.ngram_size = ngram_size

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
        words = [tuple(word) for word in bad_words_ids]
        self.bad_words_ids = tuple(w for w in words if not (len(w) == 1 and w[0] in set(eot_ids)))
        self.single = sorted({w[0] for w in self.bad_words_ids if len(w) == 1})
        self.multi = [w for w in self.bad_words_ids if len(w) > 1]

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
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
        self.min_new_tokens = min_new_tokens
        self.eot_ids = tuple(eot_ids)
        self.prompt_len = prompt_len

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] - self.prompt_len >= self.min_new_tokens:
            return logits
        return ban(logits, self.eot_ids)

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
        self.token_ids = tuple(token_ids)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return ban(logits, self.token_ids)

    def __repr__(self) -> str:
        return processor_repr("SuppressTokensProcessor", list(self.token_ids))


class PresencePenaltyProcessor:
    """Subtract `presence_penalty` (-2..2) from the logit of every token that occurs among the
    generated tokens `ids[:, prompt_len:]` (OpenAI's presence_penalty; the prompt does not count).

    >>> ids = torch.tensor([[2, 2, 1, 1, 1]])  # prompt [2, 2], generated [1, 1, 1]
    >>> PresencePenaltyProcessor(0.5, prompt_len=2)(ids, torch.zeros(1, 3))
    tensor([[ 0.0000, -0.5000,  0.0000]])
    """

    def __init__(self, presence_penalty: float, prompt_len: int) -> None:
        self.presence_penalty = presence_penalty
        self.prompt_len = prompt_len

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
        self.frequency_penalty = frequency_penalty
        self.prompt_len = prompt_len

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        counts = counts_of(ids[:, self.prompt_len :], logits.shape[-1], logits.dtype)  # (B, V)
        return logits - self.frequency_penalty * counts

    def __repr__(self) -> str:
        return processor_repr("FrequencyPenaltyProcessor", self.frequency_penalty, prompt_len=self.prompt_len)


class LogitBiasProcessor:
    """Add a fixed bias (-100..100) to some tokens' logits: OpenAI's logit_bias, given as
    (token_id, bias) pairs (the form `GenerationConfig.logit_bias` holds). -100 effectively bans
    a token, 100 forces it.

    >>> LogitBiasProcessor([(0, -100.0), (2, 1.5)])(None, torch.zeros(1, 3))
    tensor([[-100.0000,    0.0000,    1.5000]])
    """

    def __init__(self, logit_bias: Sequence[tuple[int, float]]) -> None:
        self.logit_bias = dict(logit_bias)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        index = torch.tensor(list(self.logit_bias), dtype=torch.long, device=logits.device)
        bias = torch.tensor(list(self.logit_bias.values()), dtype=logits.dtype, device=logits.device)
        return logits.index_add(-1, index, bias.expand(*logits.shape[:-1], -1))

    def __repr__(self) -> str:
        return processor_repr("LogitBiasProcessor", self.logit_bias)
