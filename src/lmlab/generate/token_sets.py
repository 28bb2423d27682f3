"""Which tokens occur in each row of a batch of ids, as (B, V) masks and counts; banning columns.

The processors (penalties.py) ask these questions of `ids`, in which a negative id marks a
position that holds no token (the left padding of a batch): it counts as no vocabulary id.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def _vocabulary_index(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """token_ids with every id outside [0, vocab_size) sent to the spare column vocab_size."""
    return torch.where(token_ids < 0, vocab_size, token_ids).clamp_(max=vocab_size)


def mask_of(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) bool: which vocabulary ids occur in each row of `token_ids` (B, T).

    >>> mask_of(torch.tensor([[2, 2, -1]]), 4)
    tensor([[False, False,  True, False]])
    """
    mask = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=torch.bool, device=token_ids.device)
    mask.scatter_(1, _vocabulary_index(token_ids, vocab_size), True)
    return mask[:, :vocab_size]


def counts_of(token_ids: torch.Tensor, vocab_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, V): how often each vocabulary id occurs in each row of `token_ids` (B, T).

    >>> counts_of(torch.tensor([[2, 2, 0]]), 3, torch.float32)
    tensor([[1., 0., 2.]])
    """
    counts = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=dtype, device=token_ids.device)
    counts.scatter_add_(1, _vocabulary_index(token_ids, vocab_size), torch.ones_like(token_ids, dtype=dtype))
    return counts[:, :vocab_size]


def ban(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """`logits` with the columns `token_ids` (all rows) set to -inf."""
    index = torch.tensor(token_ids, dtype=torch.long, device=logits.device)
    return logits.index_fill(-1, index, -math.inf)


def processor_repr(name: str, *args: object, **options: object) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in options.items()]
    return f"{name}({', '.join(shown)})"
