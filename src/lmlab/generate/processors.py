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

import math
from typing import Iterable, Mapping, Protocol, Sequence

import torch

from lmlab.errors import LmlabError
from lmlab.generate.config import LOGIT_BIAS_RANGE, PENALTY_RANGE, GenerationConfig, token_bias_pairs


class LogitsProcessor(Protocol):
    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


# --- parameter checks and small helpers -----------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LmlabError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_token_ids(
    name: str, token_ids: object, allow_empty: bool = True, what: str = "token ids"
) -> tuple[int, ...]:
    try:
        ids = tuple(token_ids)  # type: ignore[arg-type]
    except TypeError:
        raise LmlabError(f"{name} must be a list of {what}, got {token_ids!r}") from None
    if isinstance(token_ids, str) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
    ) or not (ids or allow_empty):
        raise LmlabError(f"{name} must be a list of {what} (integers >= 0), got {token_ids!r}")
    return ids


def _check_in_vocabulary(name: str, token_ids: Iterable[int], vocab_size: int) -> None:
    outside = sorted({i for i in token_ids if i >= vocab_size})
    if outside:
        raise LmlabError(f"{name} has token id(s) {outside} but the model's vocabulary has {vocab_size} tokens")


def _mask_of(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) bool: which vocabulary ids occur in each row of `token_ids` (B, T); ids >= V ignored."""
    mask = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=torch.bool, device=token_ids.device)
    mask.scatter_(1, token_ids.clamp(max=vocab_size), True)  # ids past the vocabulary go to a spare column
    return mask[:, :vocab_size]


def _counts_of(token_ids: torch.Tensor, vocab_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, V): how often each vocabulary id occurs in each row of `token_ids` (B, T)."""
    counts = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=dtype, device=token_ids.device)
    counts.scatter_add_(1, token_ids.clamp(max=vocab_size), torch.ones_like(token_ids, dtype=dtype))
    return counts[:, :vocab_size]


def _ban(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """`logits` with the columns `token_ids` (all rows) set to -inf."""
    index = torch.tensor(token_ids, dtype=torch.long, device=logits.device)
    return logits.index_fill(-1, index, -math.inf)


def _repr(name: str, *args: object, **options: object) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in options.items()]
    return f"{name}({', '.join(shown)})"


# --- penalties and bans (greedy and sampling alike) -----------------------------------------------


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
        if not _is_number(penalty) or penalty <= 0:
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
            self.prompt_ignore_length = _check_int("prompt_ignore_length", ignore, 0)
        elif ignore is not None:
            per_row = _check_token_ids("prompt_ignore_length", ignore, what="counts, one per row")
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
        seen = _mask_of(ids, vocab_size)  # (B, V)
        penalized = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen, penalized, logits)

    def __repr__(self) -> str:
        ignore = self.prompt_ignore_length
        if ignore is None:
            return _repr("RepetitionPenaltyProcessor", self.penalty)
        shown = ignore if isinstance(ignore, int) else ignore.tolist()
        return _repr("RepetitionPenaltyProcessor", self.penalty, prompt_ignore_length=shown)


class NoRepeatNGramProcessor:
    """Ban every token that would complete an n-gram (`ngram_size` tokens) already in the row:
    if the last n-1 tokens occurred before, whatever followed them then is -inf now.

    >>> ids = torch.tensor([[1, 2, 3, 1]])  # 2-grams: (1, 2) (2, 3) (3, 1); last token 1
    >>> NoRepeatNGramProcessor(2)(ids, torch.zeros(1, 4))
    tensor([[0., 0., -inf, 0.]])
    """

    def __init__(self, ngram_size: int) -> None:
        self.ngram_size = _check_int("no_repeat_ngram_size", ngram_size, 1)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        n, length = self.ngram_size, ids.shape[-1]
        if length < n:
            return logits  # no complete n-gram yet
        suffix = ids[:, length - n + 1 :]  # (B, n-1): the start of the n-gram the next token completes
        ngrams = ids.unfold(1, n, 1)  # (B, T-n+1, n)
        repeats = (ngrams[..., :-1] == suffix[:, None, :]).all(dim=-1)  # (B, T-n+1)
        vocab_size = logits.shape[-1]
        banned = torch.where(repeats, ngrams[..., -1], vocab_size)  # a non-repeat bans the spare column
        return logits.masked_fill(_mask_of(banned, vocab_size), -math.inf)

    def __repr__(self) -> str:
        return _repr("NoRepeatNGramProcessor", self.ngram_size)


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
            words = [_check_token_ids("bad_words_ids", word, allow_empty=False) for word in bad_words_ids]
        except (TypeError, LmlabError):
            raise LmlabError(message) from None
        if not words or isinstance(bad_words_ids, str):
            raise LmlabError(message)
        eot = set(_check_token_ids("eot_ids", eot_ids))
        words = [w for w in words if not (len(w) == 1 and w[0] in eot)]
        self.bad_words_ids = tuple(words)
        self.single = sorted({w[0] for w in words if len(w) == 1})
        self.multi = [w for w in words if len(w) > 1]

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        _check_in_vocabulary("bad_words_ids", (i for w in self.bad_words_ids for i in w), logits.shape[-1])
        banned = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
        banned[:, self.single] = True
        for word in self.multi:
            prefix = word[:-1]
            if len(prefix) <= ids.shape[-1]:
                ends_with_prefix = (ids[:, -len(prefix) :] == torch.tensor(prefix, device=ids.device)).all(dim=-1)
                banned[:, word[-1]] |= ends_with_prefix
        return logits.masked_fill(banned, -math.inf)

    def __repr__(self) -> str:
        return _repr("BadWordsProcessor", [list(w) for w in self.bad_words_ids])


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
        self.min_new_tokens = _check_int("min_new_tokens", min_new_tokens, 0)
        self.eot_ids = _check_token_ids("eot_ids", eot_ids, allow_empty=False)
        self.prompt_len = _check_int("prompt_len", prompt_len, 0)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] - self.prompt_len >= self.min_new_tokens:
            return logits
        return _ban(logits, [i for i in self.eot_ids if i < logits.shape[-1]])

    def __repr__(self) -> str:
        return _repr(
            "MinNewTokensProcessor", self.min_new_tokens, eot_ids=list(self.eot_ids), prompt_len=self.prompt_len
        )


class SuppressTokensProcessor:
    """Never produce the tokens `token_ids` (Hugging Face's suppress_tokens).

    >>> SuppressTokensProcessor([0, 2])(None, torch.ones(1, 3))
    tensor([[-inf, 1., -inf]])
    """

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = _check_token_ids("suppress_tokens", token_ids, allow_empty=False)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        _check_in_vocabulary("suppress_tokens", self.token_ids, logits.shape[-1])
        return _ban(logits, self.token_ids)

    def __repr__(self) -> str:
        return _repr("SuppressTokensProcessor", list(self.token_ids))


def _check_penalty(name: str, value: object) -> float:
    low, high = PENALTY_RANGE
    if not _is_number(value) or not low <= value <= high:  # type: ignore[operator]
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
        self.prompt_len = _check_int("prompt_len", prompt_len, 0)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        present = _mask_of(ids[:, self.prompt_len :], logits.shape[-1])  # (B, V)
        return logits - self.presence_penalty * present.to(logits.dtype)

    def __repr__(self) -> str:
        return _repr("PresencePenaltyProcessor", self.presence_penalty, prompt_len=self.prompt_len)


class FrequencyPenaltyProcessor:
    """Subtract `frequency_penalty` (-2..2) times its count among the generated tokens
    `ids[:, prompt_len:]` from each token's logit (OpenAI's frequency_penalty).

    >>> ids = torch.tensor([[2, 2, 1, 1, 1]])  # prompt [2, 2], generated [1, 1, 1]
    >>> FrequencyPenaltyProcessor(0.5, prompt_len=2)(ids, torch.zeros(1, 3))
    tensor([[ 0.0000, -1.5000,  0.0000]])
    """

    def __init__(self, frequency_penalty: float, prompt_len: int) -> None:
        self.frequency_penalty = _check_penalty("frequency_penalty", frequency_penalty)
        self.prompt_len = _check_int("prompt_len", prompt_len, 0)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        counts = _counts_of(ids[:, self.prompt_len :], logits.shape[-1], logits.dtype)  # (B, V)
        return logits - self.frequency_penalty * counts

    def __repr__(self) -> str:
        return _repr("FrequencyPenaltyProcessor", self.frequency_penalty, prompt_len=self.prompt_len)


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
        _check_in_vocabulary("logit_bias", self.logit_bias, logits.shape[-1])
        index = torch.tensor(list(self.logit_bias), dtype=torch.long, device=logits.device)
        bias = torch.tensor(list(self.logit_bias.values()), dtype=logits.dtype, device=logits.device)
        return logits.index_add(-1, index, bias.expand(*logits.shape[:-1], -1))

    def __repr__(self) -> str:
        return _repr("LogitBiasProcessor", self.logit_bias)


# --- sampling warpers (only when sampling) --------------------------------------------------------
# `min_tokens_to_keep` (Hugging Face's, default 1) is how many of the best tokens a filter always
# keeps; beam sampling keeps one more than the number of end-of-text ids.


class TemperatureProcessor:
    """Divide the logits by `temperature` (> 0): below 1 sharpens, above 1 flattens.

    >>> TemperatureProcessor(0.5)(None, torch.tensor([[1.0, 2.0, -4.0]]))
    tensor([[ 2.,  4., -8.]])
    """

    def __init__(self, temperature: float) -> None:
        if not _is_number(temperature) or temperature <= 0:
            raise LmlabError(f"temperature must be a number > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature

    def __repr__(self) -> str:
        return f"TemperatureProcessor({self.temperature})"


class _Warper:
    """Shared by the filters: `min_tokens_to_keep` and a repr that shows it only when set."""

    name = ""

    def __init__(self, min_tokens_to_keep: int) -> None:
        self.min_tokens_to_keep = _check_int("min_tokens_to_keep", min_tokens_to_keep, 1)

    def __repr__(self) -> str:
        options = {"min_tokens_to_keep": self.min_tokens_to_keep} if self.min_tokens_to_keep != 1 else {}
        return _repr(type(self).__name__, getattr(self, self.name), **options)


class TopKProcessor(_Warper):
    """Keep the `top_k` highest-scoring tokens (ties at the k-th score are kept); -inf the rest.

    >>> TopKProcessor(2)(None, torch.tensor([[1.0, 3.0, 2.0, 0.0]]))
    tensor([[-inf, 3., 2., -inf]])
    """

    name = "top_k"

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.top_k = _check_int("top_k", top_k, 1)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(max(self.top_k, self.min_tokens_to_keep), logits.shape[-1])
        kth_best = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth_best, -math.inf)


class TopPProcessor(_Warper):
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to at
    least `top_p` (always at least one token); -inf the rest.

    A sum within 1e-6 of `top_p` counts as reaching it, so float rounding in the softmax cannot
    let in an extra token (probabilities 0.5 + 0.3 reach top_p=0.8):

    >>> probs = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05]])
    >>> TopPProcessor(0.8)(None, probs.log()).exp()
    tensor([[0.5000, 0.3000, 0.0000, 0.0000, 0.0000]])
    >>> TopPProcessor(0.01)(None, probs.log()).isfinite()
    tensor([[ True, False, False, False, False]])
    """

    name = "top_p"

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        if not _is_number(top_p) or not 0 < top_p <= 1:
            raise LmlabError(f"top_p must be in (0, 1], got {top_p!r}")
        self.top_p = float(top_p)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the better tokens
        remove_sorted = mass_before >= self.top_p - 1e-6
        remove_sorted[..., : self.min_tokens_to_keep] = False  # the best tokens always stay
        remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
        return logits.masked_fill(remove, -math.inf)


class MinPProcessor(_Warper):
    """Keep the tokens whose probability is at least `min_p` (0..1) times the best token's;
    -inf the rest (Hugging Face's min_p). Pairs well with a high temperature.

    >>> probs = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05]])  # threshold 0.25 * 0.5 = 0.125
    >>> MinPProcessor(0.25)(None, probs.log()).isfinite()
    tensor([[ True,  True, False, False, False]])
    """

    name = "min_p"

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        if not _is_number(min_p) or not 0 <= min_p <= 1:
            raise LmlabError(f"min_p must be in [0, 1], got {min_p!r}")
        self.min_p = float(min_p)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        k = min(self.min_tokens_to_keep, logits.shape[-1])
        remove = remove.scatter(-1, torch.topk(probs, k, dim=-1).indices, False)  # keep the best k
        return logits.masked_fill(remove, -math.inf)


class TypicalPProcessor(_Warper):
    """Locally typical sampling (Meister et al. 2022, Hugging Face's typical_p): rank tokens by
    how close their surprisal -log p is to the entropy, and keep the closest ones until their
    probability reaches `typical_p` (in (0, 1)); -inf the rest. The single most likely token may
    be dropped when it is far more predictable than typical.

    >>> probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])  # entropy 1.28; |surprisal - entropy| ranks 1, 2, 0, 3
    >>> TypicalPProcessor(0.45)(None, probs.log()).isfinite()  # 0.3 + 0.2 reaches 0.45
    tensor([[False,  True,  True, False]])
    """

    name = "typical_p"

    def __init__(self, typical_p: float, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        if not _is_number(typical_p) or not 0 < typical_p < 1:
            raise LmlabError(f"typical_p must be in (0, 1) (1 means off), got {typical_p!r}")
        self.typical_p = float(typical_p)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        log_probs = logits.log_softmax(dim=-1)
        entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)  # (B, 1); 0 * -inf skipped
        atypicality = (-log_probs - entropy).abs()
        sorted_atypicality, order = torch.sort(atypicality, dim=-1)
        mass = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        # The first position where the mass reaches typical_p is the last one kept (ties included).
        last = (mass < self.typical_p).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)  # (B, 1)
        remove_sorted = sorted_atypicality > sorted_atypicality.gather(-1, last)
        remove_sorted[..., : self.min_tokens_to_keep] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, -math.inf)


# --- the list a config turns on -------------------------------------------------------------------


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
