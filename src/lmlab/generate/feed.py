"""The feed: what the model has been shown so far, for a batch of rows that grows one column a step.

A `Feed` holds the prompts, left-padded into one (R, T) buffer with room for the new tokens, the
padding mask, the model's state, and the encoder memory of a conditional model. It prefills
each prompt once and copies it to its rows (beams, or several sampled sequences), feeds each new
column through `model.step(ids, state, mask)`, reorders the rows when beam search asks, and keeps
a sliding window past `model.context_len`: the last `context_len` columns are prefilled again
from the encoder memory (or from nothing, for a causal model), never dropping the memory.

`history()` is what the processors see: every token so far, with a negative id at each position
of left padding (distinct ones, so that no n-gram of padding matches anything). The model is
shown the same buffer with the padding as id 0 under a mask that hides it.

Choosing tokens is strategies.py's job; the loop that joins the two is engine.py.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from lmlab.errors import LmlabError
from lmlab.models import device_of


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of unequal length as one batch, padded on the left: ids (B, T) and mask (B, T),
    with mask False at padding.

    >>> ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.int().tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = True
    return ids.to(device), mask.to(device)


class Feed:
    """Feeds `copies` rows per prompt to `model.step`, one new column per step.

    `memory` is the state a conditional model's `encode` returned (one row per prompt), or None.
    """

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], copies: int, max_new_tokens: int,
                 memory: Any = None) -> None:
        self.model = model
        self.context_len = model.context_len
        if self.context_len is not None and self.context_len < 1:
            raise LmlabError(f"model.context_len must be >= 1 or None, got {self.context_len!r}")
        device = device_of(model)
        prompt_ids, prompt_mask = left_pad(prompts, 0, device)  # (B, T)
        self.prompts, self.prompt_mask = prompt_ids, prompt_mask
        self.prompt_len = prompt_ids.shape[1]
        self.copies = copies
        self.rows = torch.arange(len(prompts), device=device).repeat_interleave(copies)  # (R,) prompt of each row
        padding_marks = -torch.arange(1, self.prompt_len + 1, device=device).expand_as(prompt_ids)
        self.ids = torch.zeros(len(self.rows), self.prompt_len + max_new_tokens, dtype=torch.long, device=device)
        self.ids[:, :self.prompt_len] = torch.where(prompt_mask, prompt_ids, padding_marks)[self.rows]
        self.mask = torch.ones(self.ids.shape, dtype=torch.bool, device=device)
        self.mask[:, :self.prompt_len] = prompt_mask[self.rows]
        self.length = self.prompt_len  # columns filled
        self.memory = memory
        self.origin = self.rows  # (R,) the memory row each current row continues
        self.state: Any = None
        self.window = 0  # columns the model state holds

    def history(self) -> torch.Tensor:
        """Every token so far, (R, length); negative ids mark left padding."""
        return self.ids[:, :self.length]

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, state: Any) -> torch.Tensor:
        """Feed a window that may hold padding (the mask goes along only if it does)."""
        padded = not bool(mask.all())
        logits, self.state = self.model.step(ids.clamp(min=0), state, mask if padded else None)
        return logits  # (rows, V)

    def _fresh_state(self, index: torch.Tensor | None) -> Any:
        """The state a prefill starts from: the encoder memory for these rows, or None (a causal model)."""
        if self.memory is None or index is None:
            return self.memory
        return self.model.reorder(self.memory, index)

    def start(self) -> torch.Tensor:
        """Prefill each prompt once, copy it to its rows; the next-token logits (R, V)."""
        self.window = self.prompt_len if self.context_len is None else min(self.prompt_len, self.context_len)
        window = slice(self.prompt_len - self.window, self.prompt_len)
        logits = self._prefill(self.prompts[:, window], self.prompt_mask[:, window], self._fresh_state(None))
        if self.copies == 1:
            return logits
        self.state = self.model.reorder(self.state, self.rows)
        return logits[self.rows]

    def advance(self, tokens: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Append `tokens` (R,) as the next column, after reordering the rows to `source` (R,) when
        given (row i continues old row source[i]); the next-token logits (R, V)."""
        if source is not None:
            self.ids[:, :self.length] = self.ids[source, :self.length]
            self.origin = self.origin[source]
        self.ids[:, self.length] = tokens
        self.length += 1
        if self.context_len is not None and self.window + 1 > self.context_len:  # slide
            window = slice(self.length - self.context_len, self.length)
            return self._prefill(self.ids[:, window], self.mask[:, window], self._fresh_state(self.origin))
        if source is not None:
            self.state = self.model.reorder(self.state, source)
        self.window += 1
        logits, self.state = self.model.step(self.ids[:, self.length - 1:self.length], self.state)  # (R, V)
        return logits
