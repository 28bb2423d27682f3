"""`GenerationConfig`: the decoding options, with Hugging Face (and, for the penalties and logit
bias, OpenAI) names and semantics, each checked once, when the config is built.

Here: the option table — every field carries its default, the check of its values and a help
line (the CLI makes its flags from them) — and the few checks that span two options (several
sequences need sampling or beams; top_logprobs needs logprobs). Nothing downstream checks an
option again: the processors (processors.py) and the loop (engine.py) trust a built config.
Which processors an option turns on is decided in `processors.build_processors`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from lmlab.errors import LmlabError

# OpenAI's limits, kept so a request that works here works there too.
PENALTY_RANGE = (-2.0, 2.0)  # presence_penalty, frequency_penalty
LOGIT_BIAS_RANGE = (-100.0, 100.0)
MAX_TOP_LOGPROBS = 20
MIN_TEMPERATURE = 1e-6  # below it, logits / temperature overflows float32: use 0 for greedy

Check = Callable[[str, Any], Any]  # (option name, value) -> the value normalised, or an LmlabError


def _error(name: str, expected: str, value: Any) -> LmlabError:
    return LmlabError(f"{name} must be {expected}, got {value!r}", params=(name,))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int | None = None, optional: bool = False, off: str = "") -> Check:
    """An integer in [low, high] (None allowed if `optional`).

    >>> integer(0)("top_k", -1)
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: top_k must be an integer >= 0, got -1
    """
    expected = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    expected += f" ({off})" if off else ""

    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise _error(name, expected, value)
        return value

    return check


def number(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False, optional: bool = False,
           also: tuple[float, ...] = (), off: str = "") -> Check:
    """A finite number in [low, high] ((low, high] with `open_low`), or one of `also`, as a float.

    >>> number(0, 1, open_low=True)("top_p", 1)
    1.0
    >>> number(0, 1, open_low=True)("top_p", 0)
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: top_p must be a number in (0, 1], got 0
    """
    if high == math.inf:
        expected = f"a number {'>' if open_low else '>='} {low:g}" if low > -math.inf else "a finite number"
    else:
        expected = f"a number in {'(' if open_low else '['}{low:g}, {high:g}]"
    if also:
        expected = f"{' or '.join(f'{a:g}' for a in also)} or {expected}"
    expected += f" ({off})" if off else ""

    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if _is_number(value) and value in also:
            return float(value)
        if not _is_number(value) or value > high or value < low or (open_low and value == low):
            raise _error(name, expected, value)
        return float(value)

    return check


def one_of(*choices: Any) -> Check:
    """One of a few values (booleans compared by identity, so 1 is not True)."""
    expected = " or ".join("unset" if c is None else str(c).lower() if isinstance(c, bool) else f'"{c}"'
                           for c in choices)

    def check(name: str, value: Any) -> Any:
        if not any(value is c if isinstance(c, bool) or c is None else value == c and not isinstance(value, bool)
                   for c in choices):
            raise _error(name, expected, value)
        return value

    return check


def token_ids(name: str, value: Any) -> tuple[int, ...]:
    """None or a list of token ids, as a tuple."""
    try:
        ids = () if value is None else tuple(value)
    except TypeError:
        raise _error(name, "a list of token ids", value) from None
    if isinstance(value, str) or not all(_is_int(i) and i >= 0 for i in ids):
        raise _error(name, "a list of token ids (integers >= 0)", value)
    return ids


def token_sequences(name: str, value: Any) -> tuple[tuple[int, ...], ...]:
    """None or a list of non-empty token-id lists, as a tuple of tuples."""
    expected = "a list of non-empty lists of token ids, e.g. [[42], [7, 8]]"
    try:
        sequences = () if value is None else tuple(tuple(s) for s in value)
    except TypeError:
        raise _error(name, expected, value) from None
    if isinstance(value, str) or not all(s and all(_is_int(i) and i >= 0 for i in s) for s in sequences):
        raise _error(name, expected, value)
    return sequences


def token_bias_pairs(name: str, value: Any) -> tuple[tuple[int, float], ...] | None:
    """A logit bias, given as {token_id: bias} (JSON's string keys allowed) or as (token_id, bias)
    pairs, as sorted pairs (None when empty); each bias in [-100, 100] as in OpenAI's `logit_bias`.

    >>> token_bias_pairs("logit_bias", {"50256": -100, 7: 2.5})
    ((7, 2.5), (50256, -100.0))
    """
    if value is None:
        return None
    low, high = LOGIT_BIAS_RANGE
    example = f'e.g. {{"50256": -100}}, got {value!r}'
    try:
        items = value.items() if isinstance(value, Mapping) else value
        pairs = [(key, bias) for key, bias in items]
    except (TypeError, ValueError):
        raise LmlabError(f"{name} must map token ids to biases, {example}", params=(name,)) from None
    checked: dict[int, float] = {}
    for key, bias in pairs:
        token_id = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key
        if not _is_int(token_id) or token_id < 0:
            raise LmlabError(f"{name} keys must be token ids (integers >= 0), got {key!r}; {example}", params=(name,))
        if not _is_number(bias) or not low <= bias <= high:
            raise LmlabError(f"{name} values must be numbers in [{low:g}, {high:g}], got {bias!r} for token {key!r}",
                             params=(name,))
        if token_id in checked:
            raise LmlabError(f"{name} gives token {token_id} twice", params=(name,))
        checked[token_id] = float(bias)
    return tuple(sorted(checked.items())) or None


def stop_strings(name: str, value: Any) -> tuple[str, ...]:
    """None, one string or a list of non-empty strings, as a tuple."""
    strings = (value,) if isinstance(value, str) else () if value is None else value
    try:
        strings = tuple(strings)
    except TypeError:
        raise _error(name, "a string or a list of strings", value) from None
    if not all(isinstance(s, str) and s for s in strings):
        raise _error(name, "a list of non-empty strings", value)
    return strings


def option(default: Any, check: Check, help: str, *, cli: bool = True) -> Any:
    """A config field: its default, the check its values pass, and a help line (`cli=False`: no CLI flag)."""
    return field(default=default, metadata={"check": check, "help": help, "cli": cli})


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
    are extra end-of-text ids (the tokenizer's own end-of-text id always counts); an end-of-text
    token is not returned either.

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

    max_new_tokens: int = option(100, integer(0), "tokens to generate at most")
    min_new_tokens: int = option(0, integer(0), "no end-of-text before this many new tokens")
    do_sample: bool | None = option(None, one_of(True, False, None),
                                    "sample (true) or take the most likely token (false); unset: sample with one "
                                    "beam, search with several")
    temperature: float = option(1.0, number(MIN_TEMPERATURE, also=(0.0,), off="0 is greedy"),
                                "divide the logits by this before sampling: below 1 sharper, above 1 flatter")
    top_k: int | None = option(None, integer(0, optional=True, off="0 or unset turns it off"),
                               "sample from the k most likely tokens")
    top_p: float | None = option(None, number(0, 1, open_low=True, optional=True),
                                 "sample from the smallest set of tokens with this total probability (nucleus)")
    min_p: float | None = option(None, number(0, 1, optional=True, off="0 or unset turns it off"),
                                 "drop tokens less likely than min_p times the most likely one")
    typical_p: float | None = option(None, number(0, 1, open_low=True, optional=True, off="1 or unset turns it off"),
                                     "locally typical sampling: keep this much probability, most typical first")
    repetition_penalty: float | None = option(None, number(0, open_low=True, optional=True,
                                                           off="1 or unset turns it off"),
                                              "divide the logits of tokens already present by this (HF; > 1 "
                                              "discourages repeats)")
    presence_penalty: float = option(0.0, number(*PENALTY_RANGE, off="0 turns it off"),
                                     "subtract this from the logit of every token generated so far (OpenAI)")
    frequency_penalty: float = option(0.0, number(*PENALTY_RANGE, off="0 turns it off"),
                                      "subtract this times its count from each generated token's logit (OpenAI)")
    no_repeat_ngram_size: int = option(0, integer(0, off="0 turns it off"), "never repeat an n-gram of this size")
    bad_words_ids: tuple[tuple[int, ...], ...] = option((), token_sequences, "token sequences never produced",
                                                        cli=False)
    suppress_tokens: tuple[int, ...] = option((), token_ids, "token ids never produced", cli=False)
    logit_bias: tuple[tuple[int, float], ...] | None = option(None, token_bias_pairs,
                                                              "{token_id: bias in -100..100} added to the logits",
                                                              cli=False)
    num_beams: int = option(1, integer(1), "beam search width (1: no beam search)")
    length_penalty: float = option(1.0, number(), "beam search ranks by logprob / length ** length_penalty")
    early_stopping: bool | str = option(False, one_of(True, False, "never"),
                                        "beam search stops: true (when num_beams are done), false (when no beam "
                                        "can improve) or never")
    num_return_sequences: int = option(1, integer(1), "sequences per prompt")
    logprobs: bool = option(False, one_of(True, False), "report each token's log-probability", cli=False)
    top_logprobs: int = option(0, integer(0, MAX_TOP_LOGPROBS), "report this many best alternatives per token",
                               cli=False)
    seed: int | None = option(None, integer(0, 2**63 - 1, optional=True), "random seed: same seed, same text")
    stop: tuple[str, ...] = option((), stop_strings, "stop before this string (not returned)")
    eot_ids: tuple[int, ...] = option((), token_ids, "more end-of-text ids (the tokenizer's own always counts)",
                                      cli=False)

    def __post_init__(self) -> None:
        for spec in fields(self):
            object.__setattr__(self, spec.name, spec.metadata["check"](spec.name, getattr(self, spec.name)))
        returned = self.num_return_sequences
        if self.num_beams == 1 and returned > 1 and self.greedy:
            raise LmlabError(
                f"num_return_sequences={returned} needs sampling (do_sample=true, temperature > 0) or beam search "
                f"(num_beams >= {returned}): greedy decoding has only one answer",
                params=("num_return_sequences", "do_sample", "temperature", "num_beams"))
        if self.num_beams > 1 and returned > self.num_beams:
            raise LmlabError(f"num_return_sequences ({returned}) must be <= num_beams ({self.num_beams}): "
                             "raise num_beams", params=("num_return_sequences", "num_beams"))
        if self.top_logprobs > 0 and not self.logprobs:
            raise LmlabError(f"top_logprobs={self.top_logprobs} needs logprobs=true", params=("top_logprobs", "logprobs"))

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
