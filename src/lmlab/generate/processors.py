"""Logits processors: small objects, built with their parameters, mapping (ids, logits) -> logits.

`ids` is the (B, T) long tensor of every token so far (prompt included) and `logits` the (B, V)
float scores for the next token. A processor returns new scores (it never edits its input);
filters set removed tokens to -inf. The loops apply a list of them in order, the list that
`build_processors(config)` makes. Here: temperature, top-k, top-p. Penalties, min-p, typical-p
and the rest arrive with a later issue as more classes in this file.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch

from lmlab.errors import LmlabError
from lmlab.generate.config import GenerationConfig


class LogitsProcessor(Protocol):
    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


class TemperatureProcessor:
    """Divide the logits by `temperature` (> 0): below 1 sharpens, above 1 flattens.

    >>> TemperatureProcessor(0.5)(None, torch.tensor([[1.0, 2.0, -4.0]]))
    tensor([[ 2.,  4., -8.]])
    """

    def __init__(self, temperature: float) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise LmlabError(f"temperature must be a number > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature

    def __repr__(self) -> str:
        return f"TemperatureProcessor({self.temperature})"


class TopKProcessor:
    """Keep the `top_k` highest-scoring tokens (ties at the k-th score are kept); -inf the rest.

    >>> TopKProcessor(2)(None, torch.tensor([[1.0, 3.0, 2.0, 0.0]]))
    tensor([[-inf, 3., 2., -inf]])
    """

    def __init__(self, top_k: int) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise LmlabError(f"top_k must be an integer >= 1, got {top_k!r}")
        self.top_k = top_k

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, logits.shape[-1])
        kth_best = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth_best, -math.inf)

    def __repr__(self) -> str:
        return f"TopKProcessor({self.top_k})"


class TopPProcessor:
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

    def __init__(self, top_p: float) -> None:
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise LmlabError(f"top_p must be in (0, 1], got {top_p!r}")
        self.top_p = float(top_p)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the better tokens
        remove_sorted = mass_before >= self.top_p - 1e-6
        remove_sorted[..., 0] = False  # the best token always stays
        remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
        return logits.masked_fill(remove, -math.inf)

    def __repr__(self) -> str:
        return f"TopPProcessor({self.top_p})"


def build_processors(config: GenerationConfig) -> list[LogitsProcessor]:
    """The processors `config` turns on, in the order they apply (Hugging Face's order).

    Temperature, top-k and top-p shape the sampling distribution only, so greedy decoding gets
    none of them.

    >>> build_processors(GenerationConfig(temperature=0.7, top_k=50, top_p=1.0))
    [TemperatureProcessor(0.7), TopKProcessor(50)]
    >>> build_processors(GenerationConfig(do_sample=False, top_k=50))
    []
    """
    processors: list[LogitsProcessor] = []
    if config.greedy:
        return processors
    if config.temperature != 1.0:
        processors.append(TemperatureProcessor(config.temperature))
    if config.top_k:
        processors.append(TopKProcessor(config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        processors.append(TopPProcessor(config.top_p))
    return processors
