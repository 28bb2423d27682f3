"""Beam search, a decoding strategy with Hugging Face's semantics (transformers 5.x `_beam_search`).

Every prompt keeps `num_beams` running hypotheses and a list of the `num_beams` best finished
ones. Each step, per prompt:

1. log_softmax of the next-token logits (`prepare`), then the processors (applied by the loop to
   the log-probabilities), plus each running beam's summed score; the first step looks only at beam 0.
2. The best `max(2, 1 + len(eot_ids)) * num_beams` candidates over all beams and tokens
   (sampled without replacement when `do_sample`), best first.
3. A candidate ends on an end-of-text id or at `max_new_tokens`. Among the first `num_beams`
   candidates, the ending ones compete for the finished list with the score
   sum / generated_length ** length_penalty (the end-of-text token counts in both).
4. The best `num_beams` candidates that did not end run on; the loop reorders the rows (the
   model state and the ids) to them.

The search stops when every candidate ends, when `early_stopping=True` and every prompt has
`num_beams` finished hypotheses, or when no running beam can beat the worst finished one: with
`early_stopping=False` judged at the current length, with "never" (and length_penalty > 0) at
`max_new_tokens`. A prompt that is done this way keeps its finished list. Scores use the same
float32 arithmetic (and the same -1e9 "impossible" marks) as Hugging Face, so the ranking and
the `sequences_scores` agree with it to the last bit that matters.

Nothing is committed while searching: `results()` gives each prompt's best hypotheses at the end.
Greedy decoding and sampling are strategies.py; the loop is engine.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lmlab.generate.config import GenerationConfig
from lmlab.generate.strategies import seeded_generator, top_alternatives

IMPOSSIBLE = -1.0e9  # added to a score to rule a hypothesis out (kept finite, as in Hugging Face)


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, N, ...) gathered along dim 1 by index (B, M): (B, M, ...)."""
    while index.dim() < values.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(values, index, dim=1)


class Hypotheses:
    """Per prompt and slot: generated tokens, their log-probs (and top alternatives), score, length.

    Used twice: for the running beams (score = summed log-prob) and for the finished list
    (score = length-normalised; `done` marks slots that hold a real finished hypothesis).
    """

    def __init__(self, batch: int, slots: int, max_new: int, n_top: int, score: float, device: torch.device):
        self.tokens = torch.zeros(batch, slots, max_new, dtype=torch.long, device=device)
        self.logprobs = torch.zeros(batch, slots, max_new, device=device)
        self.top_ids = torch.zeros(batch, slots, max_new, n_top, dtype=torch.long, device=device)
        self.top_values = torch.zeros(batch, slots, max_new, n_top, device=device)
        self.scores = torch.full((batch, slots), score, device=device)
        self.lengths = torch.zeros(batch, slots, dtype=torch.long, device=device)
        self.done = torch.zeros(batch, slots, dtype=torch.bool, device=device)

    def select(self, index: torch.Tensor) -> "Hypotheses":
        """The slots `index` (B, M) of every prompt, as new Hypotheses."""
        chosen = Hypotheses.__new__(Hypotheses)
        for name, value in vars(self).items():
            setattr(chosen, name, _pick(value, index))
        return chosen

    @staticmethod
    def concat(first: "Hypotheses", second: "Hypotheses") -> "Hypotheses":
        joined = Hypotheses.__new__(Hypotheses)
        for name, value in vars(first).items():
            setattr(joined, name, torch.cat([value, getattr(second, name)], dim=1))
        return joined


def _candidates(total: torch.Tensor, k: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (or, when sampling, k drawn without replacement) entries of total (B, N), best first."""
    if generator is None:
        return torch.topk(total, k, dim=-1)
    index = torch.multinomial(total.softmax(dim=-1), k, generator=generator)
    scores, order = total.gather(1, index).sort(dim=-1, descending=True)
    return scores, index.gather(1, order)


def _update_finished(finished: Hypotheses, candidates: Hypotheses, scores: torch.Tensor, just_finished: torch.Tensor,
                     can_improve: torch.Tensor, step: int, config: GenerationConfig) -> Hypotheses:
    """The best `num_beams` of the finished list and the candidates that just finished (B, K)
    with their length-normalised scores (`candidates` is used up); nothing enters a prompt's list once it is full (with
    early_stopping=True) or judged unable to improve."""
    normalized = scores / ((step + 1) ** config.length_penalty)  # (B, K); generated length step + 1
    full = finished.done.all(dim=-1, keepdim=True) & (config.early_stopping is True)  # (B, 1)
    normalized += full.to(torch.float32) * IMPOSSIBLE
    normalized += (~can_improve).to(torch.float32) * IMPOSSIBLE
    normalized += (~just_finished) * IMPOSSIBLE
    candidates.scores, candidates.done = normalized, just_finished
    merged = Hypotheses.concat(finished, candidates)  # (B, nb + K)
    return merged.select(torch.topk(merged.scores, config.num_beams, dim=-1).indices)


def _can_improve(can_improve: torch.Tensor, running: Hypotheses, finished: Hypotheses, step: int,
                 config: GenerationConfig) -> torch.Tensor:
    """(B, 1): can the best running beam still beat the worst finished hypothesis? Judged at the
    current length, or at max_new_tokens with early_stopping="never" and length_penalty > 0.
    A prompt without a full finished list can always improve; a prompt that cannot stays so."""
    length_penalty = config.length_penalty
    best_length = config.max_new_tokens if config.early_stopping == "never" and length_penalty > 0.0 else step + 1
    best_possible = running.scores[:, :1] / (best_length ** length_penalty)  # (B, 1)
    worst_finished = torch.where(finished.done, finished.scores.min(dim=1, keepdim=True).values, IMPOSSIBLE)
    return can_improve & (best_possible > worst_finished).any(dim=-1, keepdim=True)


@dataclass(frozen=True)
class Hypothesis:
    """One finished beam: its new tokens (an end-of-text id last, if one ended it), their
    log-probabilities, the best alternatives at each step (with top_logprobs), and its score."""

    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]]] | None
    score: float


class BeamSearch:
    """`num_beams` rows per prompt; `choose` picks the running beams' next tokens and their parents."""

    empty_score = 0.0

    def __init__(self, config: GenerationConfig, batch: int, eot_ids: tuple[int, ...], device: torch.device) -> None:
        self.config = config
        self.width = config.num_beams
        self.batch = batch
        self.generator = seeded_generator(config, device)
        self.n_top = config.top_logprobs
        self.eot_ids = torch.tensor(eot_ids, dtype=torch.long, device=device)
        self.n_candidates = max(2, 1 + len(eot_ids)) * self.width
        self.among_first = torch.arange(self.n_candidates, device=device) < self.width  # (K,) may finish
        self.offsets = torch.arange(batch, device=device)[:, None] * self.width  # (B, 1) first row of each prompt
        max_new = config.max_new_tokens
        self.running = Hypotheses(batch, self.width, max_new, self.n_top, 0.0, device)
        self.running.scores[:, 1:] = IMPOSSIBLE  # all beams start equal: only beam 0 may extend at first
        self.finished = Hypotheses(batch, self.width, max_new, self.n_top, IMPOSSIBLE, device)
        self.can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)  # (B, 1)
        self.done = False

    def prepare(self, logits: torch.Tensor) -> torch.Tensor:
        """What the processors act on: log-probabilities (R, V), as in Hugging Face's beam search."""
        return logits.float().log_softmax(dim=-1)

    def choose(self, log_probs: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, list]:
        """The running beams' next tokens (R,) and the rows they continue (R,), from the processed
        log-probabilities (R, V) of step `step`; sets `done` when the search is over."""
        config, beams, batch = self.config, self.width, self.batch
        vocab_size = log_probs.shape[-1]
        log_probs = log_probs.view(batch, beams, vocab_size)
        total = (log_probs + self.running.scores[:, :, None]).view(batch, beams * vocab_size)
        scores, flat_index = _candidates(total, self.n_candidates, self.generator)  # (B, K)
        parent, token = flat_index // vocab_size, flat_index % vocab_size  # (B, K)

        # Every candidate: its parent's history plus the new token.
        candidates = self.running.select(parent)
        candidates.tokens[:, :, step] = token
        candidates.logprobs[:, :, step] = log_probs.view(batch, -1).gather(1, flat_index)
        if self.n_top:
            top_ids, top_values = top_alternatives(log_probs, self.n_top)  # (B, nb, n_top)
            candidates.top_ids[:, :, step], candidates.top_values[:, :, step] = (_pick(top_ids, parent),
                                                                                  _pick(top_values, parent))
        candidates.lengths[:] = step + 1
        ends = torch.isin(token, self.eot_ids) | (step + 1 == config.max_new_tokens)  # (B, K)

        # The best candidates that do not end run on; the best that end may enter the finished list.
        candidates.scores = scores + ends.to(torch.float32) * IMPOSSIBLE
        keep = torch.topk(candidates.scores, beams, dim=-1).indices  # (B, nb)
        self.running = candidates.select(keep)
        self.finished = _update_finished(self.finished, candidates, scores, ends & self.among_first,
                                         self.can_improve, step, config)
        self.can_improve = _can_improve(self.can_improve, self.running, self.finished, step, config)
        all_full = config.early_stopping is True and bool(self.finished.done.all())
        self.done = bool(ends.all()) or all_full or not bool(self.can_improve.any())
        source = (_pick(parent, keep) + self.offsets).view(-1)  # (R,)
        return self.running.tokens[:, :, step].reshape(-1), source, []  # nothing is committed before the end

    def results(self) -> list[Hypothesis]:
        """Each prompt's `num_return_sequences` best finished hypotheses, best first, prompt by prompt."""
        finished, returned = self.finished, self.config.num_return_sequences
        tokens, logprobs = finished.tokens.tolist(), finished.logprobs.tolist()
        scores, lengths = finished.scores.tolist(), finished.lengths.tolist()
        top_ids, top_values = (finished.top_ids.tolist(), finished.top_values.tolist()) if self.n_top else (None, None)
        results = []
        for b in range(self.batch):
            for slot in range(returned):
                n = lengths[b][slot]
                top = ([list(zip(i, v)) for i, v in zip(top_ids[b][slot][:n], top_values[b][slot][:n])]
                       if self.n_top else None)
                results.append(Hypothesis(tokens[b][slot][:n], logprobs[b][slot][:n], top, scores[b][slot]))
        return results
