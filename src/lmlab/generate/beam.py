"""Beam search over the model contract, with Hugging Face's semantics (transformers 5.x `_beam_search`).

Every prompt keeps `num_beams` running hypotheses and a list of the `num_beams` best finished
ones. Each step, per prompt:

1. log_softmax of the next-token logits, then the processors (applied to the log-probabilities),
   plus each running beam's summed score; the first step looks only at beam 0.
2. The best `max(2, 1 + len(eot_ids)) * num_beams` candidates over all beams and tokens
   (sampled without replacement when `do_sample`), best first.
3. A candidate ends on an end-of-text id or at `max_new_tokens`. Among the first `num_beams`
   candidates, the ending ones compete for the finished list with the score
   sum / generated_length ** length_penalty (the end-of-text token counts in both).
4. The best `num_beams` candidates that did not end run on; the model state is reordered to them.

The search stops when every candidate ends, when `early_stopping=True` and every prompt has
`num_beams` finished hypotheses, or when no running beam can beat the worst finished one: with
`early_stopping=False` judged at the current length, with "never" (and length_penalty > 0) at
`max_new_tokens`. A prompt that is done this way keeps its finished list. Scores use the same
float32 arithmetic (and the same -1e9 "impossible" marks) as Hugging Face, so the ranking and
the `sequences_scores` agree with it to the last bit that matters.

Not here: greedy and sampling (`batch.py`, `loop.py`), the processors (`processors.py`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from lmlab.errors import LmlabError
from lmlab.generate.batch import (
    BatchFeed,
    Completion,
    batch_processors,
    build_completion,
    check_prompts,
    default_pad_id,
    left_pad,
    seeded_generator,
    top_alternatives,
)
from lmlab.generate.config import GenerationConfig
from lmlab.generate.loop import model_device, model_vocab_size

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


def beam_search(model: Any, prompts: Sequence[Sequence[int]], config: GenerationConfig | None = None,
                pad_id: int | None = None) -> list[list[Completion]]:
    """Beam search after each prompt; all prompts (left-padded) and beams decoded in one batch.

    Returns one list per prompt of `config.num_return_sequences` `Completion`s, best `score`
    first (Hugging Face's `sequences_scores`). `config.num_beams` must be >= 2 (one beam is
    greedy decoding: `batch.generate_batch`). `do_sample=True` gives beam sampling, seeded
    by `config.seed`. `pad_id` fills the left padding (default: the first end-of-text id, else 0).
    """
    config = GenerationConfig(do_sample=False, num_beams=2) if config is None else config
    if not isinstance(config, GenerationConfig):
        raise LmlabError(f"config must be a GenerationConfig, got {type(config).__name__}")
    beams = config.num_beams
    if beams < 2:
        raise LmlabError(f"beam search needs num_beams >= 2, got {beams}: one beam is greedy decoding (generate_batch)")
    returned = config.num_return_sequences
    if returned > beams:
        raise LmlabError(f"num_return_sequences ({returned}) must be <= num_beams ({beams}): raise num_beams")
    prompts = check_prompts(prompts, model_vocab_size(model))
    if not config.max_new_tokens:
        return [[Completion([], [], "length", 0.0) for _ in range(returned)] for _ in prompts]
    max_new = config.max_new_tokens
    pad_id = default_pad_id(config) if pad_id is None else pad_id
    device = model_device(model)
    generator = seeded_generator(config, device)
    n_top = getattr(config, "top_logprobs", 0)
    eot_ids = torch.tensor(config.eot_ids, dtype=torch.long, device=device)
    n_candidates = max(2, 1 + len(config.eot_ids)) * beams
    among_first = torch.arange(n_candidates, device=device) < beams  # (K,) may enter the finished list

    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)  # (B, T)
    batch, prompt_len = prompt_ids.shape
    rows = torch.arange(batch, device=device).repeat_interleave(beams)  # (B*nb,) prompt of each flat row
    processors = batch_processors(config, prompt_ids[rows], prompt_mask[rows])
    ids = torch.cat([prompt_ids[rows], torch.full((batch * beams, max_new), pad_id, dtype=torch.long, device=device)], 1)
    mask = torch.cat([prompt_mask[rows], torch.ones(batch * beams, max_new, dtype=torch.bool, device=device)], 1)

    running = Hypotheses(batch, beams, max_new, n_top, 0.0, device)
    running.scores[:, 1:] = IMPOSSIBLE  # all beams start equal: only beam 0 may extend at first
    finished = Hypotheses(batch, beams, max_new, n_top, IMPOSSIBLE, device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)  # (B, 1)
    feed = BatchFeed(model)
    with torch.inference_mode():
        logits = feed.start(prompt_ids, prompt_mask)  # (B, V): prefill each prompt once
        feed.reorder(rows)  # ... then copy it to its beams
        logits = logits[rows]  # (B*nb, V)
        for step in range(max_new):
            length = prompt_len + step
            log_probs = logits.float().log_softmax(dim=-1)
            for processor in processors:
                log_probs = processor(ids[:, :length], log_probs)
            vocab_size = log_probs.shape[-1]
            log_probs = log_probs.view(batch, beams, vocab_size)
            total = (log_probs + running.scores[:, :, None]).view(batch, beams * vocab_size)
            scores, flat_index = _candidates(total, n_candidates, generator)  # (B, K)
            parent, token = flat_index // vocab_size, flat_index % vocab_size  # (B, K)

            # Every candidate: its parent's history plus the new token.
            candidates = running.select(parent)
            candidates.tokens[:, :, step] = token
            candidates.logprobs[:, :, step] = log_probs.view(batch, -1).gather(1, flat_index)
            if n_top:
                top_ids, top_values = top_alternatives(log_probs, n_top)  # (B, nb, n_top)
                candidates.top_ids[:, :, step], candidates.top_values[:, :, step] = _pick(top_ids, parent), _pick(top_values, parent)
            candidates.lengths[:] = step + 1
            ends = torch.isin(token, eot_ids) | (step + 1 == max_new)  # (B, K)

            # The best candidates that do not end run on; the best that end may enter the finished list.
            candidates.scores = scores + ends.to(torch.float32) * IMPOSSIBLE
            keep = torch.topk(candidates.scores, beams, dim=-1).indices  # (B, nb)
            running = candidates.select(keep)
            finished = _update_finished(finished, candidates, scores, ends & among_first, can_improve, step, config)
            can_improve = _can_improve(can_improve, running, finished, step, config)

            # Stop, or feed the running beams' new tokens (the state follows its parent rows).
            all_full = bool(finished.done.all()) and config.early_stopping is True
            if bool(ends.all()) or all_full or not bool(can_improve.any()):
                break
            source = (_pick(parent, keep) + torch.arange(batch, device=device)[:, None] * beams).view(-1)  # (B*nb,)
            ids[:, :length] = ids[source, :length]
            ids[:, length] = running.tokens[:, :, step].reshape(-1)
            logits = feed.advance(ids[:, :length + 1], mask[:, :length + 1], index=source)

    return _completions(finished, returned, frozenset(config.eot_ids), n_top)


def _completions(finished: Hypotheses, returned: int, eot_ids: frozenset[int], n_top: int) -> list[list[Completion]]:
    """The best `returned` finished hypotheses of each prompt (already sorted best first)."""
    tokens, logprobs = finished.tokens.tolist(), finished.logprobs.tolist()
    scores, lengths = finished.scores.tolist(), finished.lengths.tolist()
    top_ids, top_values = (finished.top_ids.tolist(), finished.top_values.tolist()) if n_top else (None, None)
    results = []
    for b in range(len(tokens)):
        per_prompt = []
        for slot in range(returned):
            n = lengths[b][slot]
            top = (top_ids[b][slot][:n], top_values[b][slot][:n]) if n_top else None
            per_prompt.append(build_completion(tokens[b][slot][:n], logprobs[b][slot][:n], eot_ids, scores[b][slot], top))
        results.append(per_prompt)
    return results
