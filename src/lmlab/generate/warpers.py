"""Sampling warpers, applied only when sampling (see processors.py): temperature, top-k, top-p,
min-p and typical-p.

`min_tokens_to_keep` (Hugging Face's, default 1) is how many of the best tokens a filter always
keeps; beam sampling keeps one more than the number of end-of-text ids. Parameters come checked
from `GenerationConfig` (config.py); nothing here checks them again.
"""
from __future__ import annotations

import math

import torch

from lmlab.generate.token_sets import processor_repr


class TemperatureProcessor:
    """Divide the logits by `temperature` (> 0): below 1 sharpens, above 1 flattens.

    >>> TemperatureProcessor(0.5)(None, torch.tensor([[1.0, 2.0, -4.0]]))
    tensor([[ 2.,  4., -8.]])
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature

    def __repr__(self) -> str:
        return f"TemperatureProcessor({self.temperature})"


class _Warper:
    """Shared by the filters: `min_tokens_to_keep` and a repr that shows it only when set."""

    name = ""

    def __init__(self, min_tokens_to_keep: int) -> None:
        self.min_tokens_to_keep = min_tokens_to_keep

    def __repr__(self) -> str:
        options = {"min_tokens_to_keep": self.min_tokens_to_keep} if self.min_tokens_to_keep != 1 else {}
        return processor_repr(type(self).__name__, getattr(self, self.name), **options)


class TopKProcessor(_Warper):
    """Keep the `top_k` highest-scoring tokens (ties at the k-th score are kept); -inf the rest.

    >>> TopKProcessor(2)(None, torch.tensor([[1.0, 3.0, 2.0, 0.0]]))
    tensor([[-inf, 3., 2., -inf]])
    """

    name = "top_k"

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.top_k = top_k

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
        self.top_p = top_p

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
        self.min_p = min_p

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        k = min(self.min_tokens_to_keep, logits.shape[-1])
        remove = remove.scatter(-1, torch.topk(probs, k, dim=-1).indices, False)  # keep the best k
        return logits.masked_fill(remove, -math.inf)


class TypicalPProcessor(_Warper):
    """Locally typical sampling (Meister et al. 2022, Hugging Face's typical_p): rank tokens by
    how close their surprisal -log p is to the entropy, and keep the closest ones until their
    probability reaches `typical_p` (in (0, 1]); -inf the rest. The single most likely token may
    be dropped when it is far more predictable than typical.

    >>> probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])  # entropy 1.28; |surprisal - entropy| ranks 1, 2, 0, 3
    >>> TypicalPProcessor(0.45)(None, probs.log()).isfinite()  # 0.3 + 0.2 reaches 0.45
    tensor([[False,  True,  True, False]])
    """

    name = "typical_p"

    def __init__(self, typical_p: float, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.typical_p = typical_p

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
