"""Scoring sentences: the log-probability of each line, token by token, for any model family.

A sentence is scored the way language models are evaluated: given the sentence start (the
tokenizer's encoding of a line break, i.e. `<eos>` for word-level data), every token of the line
and then the end-of-sentence token are predicted, and their natural-log probabilities summed.
Corpus-level perplexity is in evaluate/__init__.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models import device_of

BOUNDARY = "\n"


@dataclass(frozen=True)
class SentenceScore:
    text: str
    logprob: float  # natural log
    tokens: list[tuple[str, float]] = field(default_factory=list)  # (token, logprob) incl. the end of sentence

    @property
    def perplexity(self) -> float:
        return math.exp(-self.logprob / max(len(self.tokens), 1))


@torch.no_grad()
def token_logprobs(model: nn.Module, context: list[int], targets: list[int]) -> list[float]:
    """log P(targets[i] | context + targets[:i]) for each i, in windows of the model's context."""
    ids = context + targets
    limit = model.context_len or len(ids)
    scores: list[float] = []
    start = len(context)  # index in `ids` of the next token to score
    while start < len(ids):
        window_start = max(0, start - limit)
        window = ids[window_start: min(len(ids), window_start + limit + 1)]
        x = torch.tensor(window[:-1], device=device_of(model))[None]
        logits, _ = model(x)
        log_probs = logits[0].float().log_softmax(-1)  # (T, V)
        first = start - window_start - 1  # row that predicts ids[start]
        for row in range(first, len(window) - 1):
            scores.append(float(log_probs[row, window[row + 1]]))
        start = window_start + len(window)
    return scores


def score_sentence(model: nn.Module, tokenizer: Any, text: str) -> SentenceScore:
    """Score one line given the sentence start; see the module docstring for the convention."""
    if "\n" in text:
        raise LmlabError("score one line at a time (the text contains a line break)")
    boundary = tokenizer.encode(BOUNDARY)
    if not boundary:
        raise LmlabError("this tokenizer cannot encode a line break, so sentences have no boundary to score")
    targets = tokenizer.encode(text) + boundary
    was_training = model.training
    model.eval()
    scores = token_logprobs(model, boundary, targets)
    model.train(was_training)
    pieces = [(tokenizer.id_to_token(t), s) for t, s in zip(targets, scores)]
    return SentenceScore(text=text, logprob=math.fsum(scores), tokens=pieces)
