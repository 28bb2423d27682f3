"""`GenerationConfig`: the decoding options, with Hugging Face (and, for the penalties and logit
bias, OpenAI) names and semantics.

Here: length (max/min new tokens), greedy/sampling, the sampling filters (temperature, top-k,
top-p, min-p, typical-p), the penalties and bans (repetition, presence, frequency, no-repeat
n-grams, bad words, suppressed tokens, logit bias), stop strings and end-of-text ids, and the
beam-search and log-probability options (checked and stored here; the beam loop lives in
`beam.py`). Which processors an option turns on is decided in `processors.build_processors`; the
loops that use them are in `loop.py` and `stream.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from lmlab.errors import LmlabError

# OpenAI's limits, kept so a request that works here works there too.
PENALTY_RANGE = (-2.0, 2.0)  # presence_penalty, frequency_penalty
LOGIT_BIAS_RANGE = (-100.0, 100.0)
MAX_TOP_LOGPROBS = 20
MIN_TEMPERATURE = 1e-6  # below it, logits / temperature overflows float32: use 0 for greedy


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _token_ids(name: str, value: Any) -> tuple[int, ...]:
    """`value` (None or a list of token ids) as a tuple, or an error naming `name`."""
    try:
        ids = () if value is None else tuple(value)
    except TypeError:
        raise LmlabError(f"{name} must be a list of token ids, got {value!r}") from None
    if isinstance(value, str) or not all(_is_int(i) and i >= 0 for i in ids):
        raise LmlabError(f"{name} must be a list of token ids (integers >= 0), got {value!r}")
    return ids


def _token_sequences(name: str, value: Any) -> tuple[tuple[int, ...], ...]:
    """`value` (None or a list of non-empty token-id lists) as a tuple of tuples."""
    message = f"{name} must be a list of non-empty lists of token ids, e.g. [[42], [7, 8]], got {value!r}"
    try:
        sequences = () if value is None else tuple(value)
        sequences = tuple(tuple(s) for s in sequences)
    except TypeError:
        raise LmlabError(message) from None
    if isinstance(value, str) or not all(s and all(_is_int(i) and i >= 0 for i in s) for s in sequences):
        raise LmlabError(message)
    return sequences


def token_bias_pairs(name: str, value: Any) -> tuple[tuple[int, float], ...]:
    """A logit bias, given as {token_id: bias} (JSON's string keys allowed) or as (token_id, bias)
    pairs, as sorted pairs; each bias in [-100, 100] as in OpenAI's `logit_bias`.

    >>> token_bias_pairs("logit_bias", {"50256": -100, 7: 2.5})
    ((7, 2.5), (50256, -100.0))
    """
    low, high = LOGIT_BIAS_RANGE
    example = f'e.g. {{"50256": -100}}, got {value!r}'
    try:
        items = value.items() if isinstance(value, Mapping) else value
        pairs = [(key, bias) for key, bias in items]
    except (TypeError, ValueError):
        raise LmlabError(f"{name} must map token ids to biases, {example}") from None
    checked: dict[int, float] = {}
    for key, bias in pairs:
        token_id = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key
        if not _is_int(token_id) or token_id < 0:
            raise LmlabError(f"{name} keys must be token ids (integers >= 0), got {key!r}; {example}")
        if not _is_number(bias) or not low <= bias <= high:
            raise LmlabError(f"{name} values must be numbers in [{low:g}, {high:g}], got {bias!r} for token {key!r}")
        if token_id in checked:
            raise LmlabError(f"{name} gives token {token_id} twice")
        checked[token_id] = float(bias)
    return tuple(sorted(checked.items()))


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick each next token and when to stop.

    Length and sampling: `do_sample=False` is greedy decoding (argmax); `temperature=0` also
    means greedy, as in most APIs. Left unset (None), it samples one sequence at a time and
    searches deterministically with beams (`num_beams` > 1), as Hugging Face does for beams;
    `do_sample=True` with beams is beam sampling. `top_k` 0/None, `top_p` 1.0/None, `min_p` None/0 and
    `typical_p` 1.0/None switch those filters off. As in Hugging Face, temperature, top_k, top_p,
    min_p and typical_p only act when sampling. `min_new_tokens` keeps end-of-text ids away until
    that many tokens are out. `seed` makes sampling repeatable (None draws fresh randomness).

    Penalties and bans act in greedy decoding too: `repetition_penalty` (HF: >1 discourages any
    token already in the prompt or output; None/1.0 off), `no_repeat_ngram_size` (HF: no n-gram
    twice, 0 off), `bad_words_ids` (HF: token sequences never produced), `suppress_tokens` (ids
    never produced), and, counted over generated tokens only, OpenAI's `presence_penalty` and
    `frequency_penalty` (-2..2) and `logit_bias` ({token_id: bias in -100..100}; stored as sorted
    (token_id, bias) pairs so the config stays hashable).

    Stopping: `stop` strings end generation at the text level and are not returned; `eot_ids`
    are extra end-of-text ids (the tokenizer's own `eot_id` always counts); an end-of-text token is
    not returned either.

    Beam search and log-probabilities (HF/OpenAI names): `num_beams`, `length_penalty`,
    `early_stopping` (True, False or "never"), `num_return_sequences` (<= num_beams with beams; 1
    for plain greedy), `logprobs` and `top_logprobs` (0..20, needs logprobs=True).

    >>> GenerationConfig(temperature=0).greedy
    True
    >>> GenerationConfig.from_dict({"top_p": 0.9, "stop": ["\\n\\n"]}).stop
    ('\\n\\n',)
    >>> GenerationConfig(logit_bias={"50256": -100}).logit_bias
    ((50256, -100.0),)
    """

    max_new_tokens: int = 100
    min_new_tokens: int = 0
    do_sample: bool | None = None  # None: sample with one beam, search with several
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    suppress_tokens: tuple[int, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    eot_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self._check_length_and_sampling()
        self._check_penalties()
        self._check_beams_and_logprobs()
        self._check_stopping()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _check_length_and_sampling(self) -> None:
        for name in ("max_new_tokens", "min_new_tokens"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise LmlabError(f"{name} must be an integer >= 0, got {value!r}")
        if self.do_sample is not None and not isinstance(self.do_sample, bool):
            raise LmlabError(f"do_sample must be true, false or unset, got {self.do_sample!r}")
        if not _is_number(self.temperature) or self.temperature < 0 or 0 < self.temperature < MIN_TEMPERATURE:
            raise LmlabError(f"temperature must be 0 (greedy) or a number >= {MIN_TEMPERATURE:g}, "
                             f"got {self.temperature!r}")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 0):
            raise LmlabError(f"top_k must be an integer >= 0 (0 or None turns it off), got {self.top_k!r}")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            raise LmlabError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.min_p is not None and (not _is_number(self.min_p) or not 0 <= self.min_p <= 1):
            raise LmlabError(f"min_p must be in [0, 1] (0 or None turns it off), got {self.min_p!r}")
        if self.typical_p is not None and (not _is_number(self.typical_p) or not 0 < self.typical_p <= 1):
            raise LmlabError(f"typical_p must be in (0, 1] (1 or None turns it off), got {self.typical_p!r}")
        self._set("temperature", float(self.temperature))
        for name in ("top_p", "min_p", "typical_p"):
            if getattr(self, name) is not None:
                self._set(name, float(getattr(self, name)))

    def _check_penalties(self) -> None:
        penalty = self.repetition_penalty
        if penalty is not None:
            if not _is_number(penalty) or penalty <= 0:
                raise LmlabError(f"repetition_penalty must be a number > 0 (1 or None turns it off), got {penalty!r}")
            self._set("repetition_penalty", float(penalty))
        low, high = PENALTY_RANGE
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not _is_number(value) or not low <= value <= high:
                raise LmlabError(f"{name} must be a number in [{low:g}, {high:g}] (0 turns it off), got {value!r}")
            self._set(name, float(value))
        if not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0:
            raise LmlabError(
                f"no_repeat_ngram_size must be an integer >= 0 (0 turns it off), got {self.no_repeat_ngram_size!r}"
            )
        self._set("bad_words_ids", _token_sequences("bad_words_ids", self.bad_words_ids))
        self._set("suppress_tokens", _token_ids("suppress_tokens", self.suppress_tokens))
        if self.logit_bias is not None:
            self._set("logit_bias", token_bias_pairs("logit_bias", self.logit_bias) or None)

    def _check_beams_and_logprobs(self) -> None:
        for name in ("num_beams", "num_return_sequences"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise LmlabError(f"{name} must be an integer >= 1, got {value!r}")
        if not _is_number(self.length_penalty):
            raise LmlabError(f"length_penalty must be a finite number (1.0 is neutral), got {self.length_penalty!r}")
        self._set("length_penalty", float(self.length_penalty))
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise LmlabError(f'early_stopping must be true, false or "never", got {self.early_stopping!r}')
        returned = self.num_return_sequences
        if self.num_beams == 1 and returned > 1 and self.greedy:
            raise LmlabError(
                f"num_return_sequences={returned} needs sampling (do_sample=true, temperature > 0) or beam search "
                f"(num_beams >= {returned}): greedy decoding has only one answer"
            )
        if self.num_beams > 1 and returned > self.num_beams:
            raise LmlabError(
                f"num_return_sequences ({returned}) must be <= num_beams ({self.num_beams}): raise num_beams"
            )
        if not isinstance(self.logprobs, bool):
            raise LmlabError(f"logprobs must be true or false, got {self.logprobs!r}")
        top = self.top_logprobs
        if not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise LmlabError(f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], got {top!r}")
        if top > 0 and not self.logprobs:
            raise LmlabError(f"top_logprobs={top} needs logprobs=true")

    def _check_stopping(self) -> None:
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise LmlabError(f"seed must be an integer in [0, 2**63) or None, got {self.seed!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else () if self.stop is None else self.stop
        try:
            stop = tuple(stop)
        except TypeError:
            raise LmlabError(f"stop must be a string or a list of strings, got {self.stop!r}") from None
        if not all(isinstance(s, str) and s for s in stop):
            raise LmlabError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        self._set("stop", stop)
        self._set("eot_ids", _token_ids("eot_ids", self.eot_ids))

    @property
    def sampling(self) -> bool:
        """Whether next tokens are drawn at random: `do_sample`, or when unset, one beam."""
        return self.num_beams == 1 if self.do_sample is None else self.do_sample

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (not sampling, or temperature=0)."""
        return not self.sampling or self.temperature == 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GenerationConfig":
        """Build from a mapping of option names; unknown names are an error that lists them."""
        if not isinstance(data, Mapping):
            raise LmlabError(f"generation options must be a mapping of names to values, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise LmlabError(
                f"unknown generation option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> "GenerationConfig":
        """A new config with some options changed (checked like `from_dict`)."""
        return self.from_dict({**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})
