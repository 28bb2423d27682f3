"""Shared by the logits processors: parameter checks that raise clear errors, and small tensor helpers."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from lmlab.errors import LmlabError


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LmlabError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_token_ids(
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


def check_in_vocabulary(name: str, token_ids: Iterable[int], vocab_size: int) -> None:
    outside = sorted({i for i in token_ids if i >= vocab_size})
    if outside:
        raise LmlabError(f"{name} has token id(s) {outside} but the model's vocabulary has {vocab_size} tokens")


def mask_of(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) bool: which vocabulary ids occur in each row of `token_ids` (B, T); ids >= V ignored."""
    mask = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=torch.bool, device=token_ids.device)
    mask.scatter_(1, token_ids.clamp(max=vocab_size), True)  # ids past the vocabulary go to a spare column
    return mask[:, :vocab_size]


def counts_of(token_ids: torch.Tensor, vocab_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, V): how often each vocabulary id occurs in each row of `token_ids` (B, T)."""
    counts = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=dtype, device=token_ids.device)
    counts.scatter_add_(1, token_ids.clamp(max=vocab_size), torch.ones_like(token_ids, dtype=dtype))
    return counts[:, :vocab_size]


def ban(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """`logits` with the columns `token_ids` (all rows) set to -inf."""
    index = torch.tensor(token_ids, dtype=torch.long, device=logits.device)
    return logits.index_fill(-1, index, -math.inf)


def processor_repr(name: str, *args: object, **options: object) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in options.items()]
    return f"{name}({', '.join(shown)})"
