"""Decoding strategies: how the next token is chosen from the processed scores.

A strategy has a `width` (rows per prompt), `prepare(logits)` (what the processors act on),
`choose(scores, step) -> (tokens, source, committed)` — every row's next token, the rows they
continue (None: each its own), and the (row, token id, log-probability, alternatives) it commits
now — `done`, `results()` (what it commits only at the end) and `empty_score` (the score of a
sequence of no tokens). Here: `Sampling`, which is greedy decoding (argmax) or sampling from the
processed distribution, every row on its own, committing a token per row per step. Beam search,
which commits nothing until the search ends, is beam.py. The loop that runs either is engine.py.
"""
from __future__ import annotations

import torch

from lmlab.generate.config import GenerationConfig


def seeded_generator(config: GenerationConfig, device: torch.device) -> torch.Generator | None:
    """A generator seeded with `config.seed` (fresh randomness if None); None when greedy."""
    if config.greedy:
        return None
    generator = torch.Generator(device=device)
    if config.seed is None:
        generator.seed()
    else:
        generator.manual_seed(config.seed)
    return generator


def top_alternatives(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (ids, log-probs) per row of log_probs (..., V), best first.

    >>> top_alternatives(torch.tensor([[-2.0, -0.5, -1.0]]), 2)
    (tensor([[1, 2]]), tensor([[-0.5000, -1.0000]]))
    """
    values, ids = torch.topk(log_probs, min(k, log_probs.shape[-1]), dim=-1)
    return ids, values


class Sampling:
    """Greedy decoding or sampling, `num_return_sequences` rows per prompt (sampled on their own, as
    Hugging Face draws them). `choose` returns each row's token, its log-probability under the
    processed distribution (after top-k / top-p renormalise it; greedy: the model's own after the
    penalties) and, with top_logprobs, the best alternatives."""

    done = False  # the loop ends when every sequence has
    empty_score = None

    def __init__(self, config: GenerationConfig, device: torch.device) -> None:
        self.width = config.num_return_sequences
        self.generator = seeded_generator(config, device)
        self.n_top = config.top_logprobs

    def prepare(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float()

    def choose(self, scores: torch.Tensor, step: int) -> tuple[torch.Tensor, None, list[tuple]]:
        """Every row's token (R,), committed at once with its log-probability and alternatives."""
        if self.generator is None:
            tokens = scores.argmax(dim=-1)  # (R,)
        else:
            tokens = torch.multinomial(scores.softmax(dim=-1), 1, generator=self.generator)[:, 0]  # (R,)
        log_probs = scores.log_softmax(dim=-1)  # (R, V)
        chosen = log_probs.gather(1, tokens[:, None])[:, 0].tolist()
        alternatives: list = [None] * len(chosen)
        if self.n_top:
            top_ids, top_values = top_alternatives(log_probs, self.n_top)
            alternatives = [list(zip(i, v)) for i, v in zip(top_ids.tolist(), top_values.tolist())]
        return tokens, None, list(zip(range(len(chosen)), tokens.tolist(), chosen, alternatives))

    def results(self) -> list:
        return []  # everything was committed as it was chosen
