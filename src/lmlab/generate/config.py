"""`GenerationConfig`: the decoding options, with Hugging Face names and semantics.

Only the options of first generation live here (length, greedy/sampling, temperature, top-k,
top-p, seed, stop strings, end-of-text ids). Which processors an option turns on is decided in
`processors.build_processors`; the loops that use them are in `loop.py` and `stream.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from lmlab.errors import LmlabError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick each next token and when to stop.

    `do_sample=False` is greedy decoding (argmax); `temperature=0` also means greedy, as in most
    APIs. `top_k` 0/None and `top_p` 1.0/None switch those filters off. As in Hugging Face,
    temperature, top_k and top_p only act when sampling. `seed` makes sampling repeatable
    (None draws fresh randomness). `stop` strings end generation at the text level and are not
    returned; `eot_ids` are extra end-of-text ids (the tokenizer's own `eot_id` always counts);
    an end-of-text token is not returned either.

    >>> GenerationConfig(temperature=0).greedy
    True
    >>> GenerationConfig.from_dict({"top_p": 0.9, "stop": ["\\n\\n"]}).stop
    ('\\n\\n',)
    """

    max_new_tokens: int = 100
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    eot_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 0:
            raise LmlabError(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        if not isinstance(self.do_sample, bool):
            raise LmlabError(f"do_sample must be true or false, got {self.do_sample!r}")
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise LmlabError(
                f"temperature must be a number >= 0 (0 means greedy), got {self.temperature!r}"
            )
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 0):
            raise LmlabError(f"top_k must be an integer >= 0 (0 or None turns it off), got {self.top_k!r}")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            raise LmlabError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise LmlabError(f"seed must be an integer >= 0 or None, got {self.seed!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else () if self.stop is None else self.stop
        try:
            stop = tuple(stop)
        except TypeError:
            raise LmlabError(f"stop must be a string or a list of strings, got {self.stop!r}") from None
        if not all(isinstance(s, str) and s for s in stop):
            raise LmlabError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        try:
            eot_ids = () if self.eot_ids is None else tuple(self.eot_ids)
        except TypeError:
            raise LmlabError(f"eot_ids must be a list of token ids, got {self.eot_ids!r}") from None
        if not all(_is_int(i) and i >= 0 for i in eot_ids):
            raise LmlabError(f"eot_ids must be a list of token ids (integers >= 0), got {self.eot_ids!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        if self.top_p is not None:
            object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "eot_ids", eot_ids)

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (do_sample=False or temperature=0)."""
        return not self.do_sample or self.temperature == 0

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
