"""Batched greedy and sampling generation: many prompts of unequal length in one batch.

Here: `left_pad` (prompts into one left-padded (B, T) batch plus its padding mask), `BatchFeed`
(feeds a growing batch to `model.step`: padding mask, cache reordering, a sliding window past
`context_len`), the `Completion` record, and `generate_batch`, which decodes every row at once,
each row stopping on its own at an end-of-text id or `max_new_tokens`, as Hugging Face's
`generate` does: a finished row keeps being fed the pad id and its outputs are ignored.
Beam search, which returns the same `Completion` records, is in `beam.py`; one prompt at a time
with streaming is `loop.py` and `stream.py`.

Only the ids in `config.eot_ids` end a row: callers add their tokenizer's end-of-text id, as
`stream.generate` does. As in Hugging Face (transformers 5.x), the processors see the left
padding as `pad_id` tokens (by default the first end-of-text id) and count `prompt_len` from the
padded length, except the repetition penalty, which ignores the padding (`batch_processors`).
"""
from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from lmlab.errors import LmlabError
from lmlab.generate.config import GenerationConfig
from lmlab.generate.loop import check_prompt_vocabulary, model_device, model_vocab_size
from lmlab.generate.processors import (BadWordsProcessor, LogitsProcessor, NoRepeatNGramProcessor,
                                       RepetitionPenaltyProcessor, build_processors)


@dataclass(frozen=True)
class Completion:
    """One generated continuation of one prompt.

    `token_ids` are the new tokens (the end-of-text id that ended it is left out, as in `loop.py`);
    `logprobs[i]` is the log-probability of `token_ids[i]` under the distribution it was chosen
    from (after the processors). `finish_reason` is "stop" (an end-of-text id) or "length"
    (max_new_tokens). `score` is beam search's ranking score, Hugging Face's `sequences_scores`:
    the summed log-probabilities (the end-of-text token's included) over length ** length_penalty,
    where the length counts the end-of-text token; None for greedy and sampling. With
    `config.top_logprobs` > 0, `top_logprobs[i]` lists the best (token_id, logprob) pairs at step i.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    score: float | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = field(default=None, repr=False)


def check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int | None = None) -> list[list[int]]:
    """`prompts` as lists of ints below `vocab_size` (if given), or an error that says what is wrong."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise LmlabError(f"prompts must be a non-empty list of token-id lists, got {prompts!r:.80}")
    checked = []
    for n, prompt in enumerate(prompts):
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence):
            raise LmlabError(f"prompt {n} must be a list of token ids, got {prompt!r:.80}")
        ids = [int(i) for i in prompt if isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0]
        if len(ids) != len(prompt):
            raise LmlabError(f"prompt {n} must hold integer token ids >= 0, got {list(prompt)!r:.80}")
        if not ids:
            raise LmlabError(f"prompt {n} is empty: give at least one token to continue from")
        check_prompt_vocabulary(n, ids, vocab_size)
        checked.append(ids)
    return checked


def default_pad_id(config: GenerationConfig) -> int:
    """The id that fills left padding and finished rows: the first end-of-text id, else 0 (as HF
    falls back to eos_token_id when there is no pad_token_id)."""
    return config.eot_ids[0] if config.eot_ids else 0


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


class BatchFeed:
    """Feeds a batch that grows by one column per step to `model.step`.

    `start(ids, mask)` prefills the prompt batch; `advance(ids, mask, index)` takes the whole
    batch so far, reorders the model state by `index` (a (B,) row index, for beam search) and
    feeds the last column. The padding mask is passed only while some row is padded, so models
    without a `mask` argument still batch prompts of equal length. Past `model.context_len` it
    keeps a sliding window like `loop.py`: the last `context_len` columns are prefilled afresh.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.context_len = getattr(model, "context_len", None)
        if self.context_len is not None and self.context_len < 1:
            raise LmlabError(f"model.context_len must be >= 1 or None, got {self.context_len!r}")
        step = getattr(model, "step", None)
        if step is None:
            raise LmlabError(f"{type(model).__name__} has no step(ids, state): it cannot generate")
        try:
            self.takes_mask = "mask" in inspect.signature(step).parameters
        except (TypeError, ValueError):
            self.takes_mask = False
        self.state: Any = None
        self.window = 0  # columns the model state holds

    def _step(self, ids: torch.Tensor, mask: torch.Tensor, state: Any) -> torch.Tensor:
        if bool(mask.all()):
            logits, self.state = self.model.step(ids, state)
        elif not self.takes_mask:
            raise LmlabError(
                f"{type(self.model).__name__}.step takes no padding mask, so it cannot batch prompts of unequal "
                "length: generate them one at a time or give prompts of equal length"
            )
        else:
            logits, self.state = self.model.step(ids, state, mask=mask)
        return logits  # (B, V)

    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Prefill the prompts ids (B, T) with mask (B, T); return the next-token logits (B, V)."""
        self.window = ids.shape[1] if self.context_len is None else min(ids.shape[1], self.context_len)
        return self._step(ids[:, -self.window:], mask[:, -self.window:], None)

    def reorder(self, index: torch.Tensor) -> None:
        """Reorder (or copy) the rows of the model state: row i becomes old row index[i]."""
        self.state = self.model.reorder(self.state, index)

    def advance(self, ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The logits (B, V) after the last column of ids (B, T), rows already reordered by `index`."""
        if self.context_len is not None and self.window + 1 > self.context_len:
            return self._step(ids[:, -self.context_len:], mask[:, -self.context_len:], None)  # slide
        if index is not None:
            self.reorder(index)
        self.window += 1
        return self._step(ids[:, -1:], mask[:, -1:], self.state)


class IgnorePadding:
    """Runs `processor` with each row's left padding replaced by that row's first real token, so
    the padding adds no token to the row (Hugging Face's `prompt_ignore_length` for the
    repetition penalty). For processors that only ask which tokens occur in a row."""

    def __init__(self, processor: LogitsProcessor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        self.processor = processor
        first_real = prompt_ids.gather(1, prompt_mask.long().argmax(dim=1, keepdim=True))  # (B, 1)
        self.prompt = torch.where(prompt_mask, prompt_ids, first_real)  # (B, T_prompt)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        prompt_len = self.prompt.shape[1]
        return self.processor(torch.cat([self.prompt, ids[:, prompt_len:]], dim=1), logits)

    def __repr__(self) -> str:
        return f"IgnorePadding({self.processor!r})"


class HidePadding:
    """Runs `processor` with each row's left padding replaced by distinct negative ids, which match
    no token and no other position: no n-gram or banned sequence reaches into the padding. For
    processors that compare sequences of ids (no-repeat n-grams, multi-token bad words)."""

    def __init__(self, processor: LogitsProcessor, prompt_mask: torch.Tensor) -> None:
        self.processor = processor
        self.mask = prompt_mask  # (B, T_prompt)
        self.fill = -torch.arange(1, prompt_mask.shape[1] + 1, device=prompt_mask.device).expand_as(prompt_mask)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        prompt_len = self.mask.shape[1]
        prompt = torch.where(self.mask, ids[:, :prompt_len], self.fill)
        return self.processor(torch.cat([prompt, ids[:, prompt_len:]], dim=1), logits)

    def __repr__(self) -> str:
        return f"HidePadding({self.processor!r})"


def batch_processors(config: GenerationConfig, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
                     ) -> list[LogitsProcessor]:
    """`build_processors` for a left-padded batch of prompts (R, T): `prompt_len` is T, and no
    processor sees the padding, so a prompt in a batch gives what it gives alone (the repetition
    penalty does not count it, as in Hugging Face; no-repeat n-grams and bad words never match it).
    Every row of a later `ids` must continue the same row of `prompt_ids` (beam search reorders
    only within a prompt)."""
    processors = build_processors(config, prompt_len=prompt_ids.shape[1])
    if bool(prompt_mask.all()):
        return processors
    return [IgnorePadding(p, prompt_ids, prompt_mask) if isinstance(p, RepetitionPenaltyProcessor)
            else HidePadding(p, prompt_mask) if isinstance(p, (NoRepeatNGramProcessor, BadWordsProcessor))
            else p for p in processors]


def top_alternatives(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (ids, log-probs) per row of log_probs (..., V), best first."""
    values, ids = torch.topk(log_probs, min(k, log_probs.shape[-1]), dim=-1)
    return ids, values


def build_completion(tokens: list[int], logprobs: list[float], eot_ids: frozenset[int], score: float | None = None,
                     top: tuple[list[list[int]], list[list[float]]] | None = None) -> Completion:
    """A `Completion` from the generated tokens (the last may be an end-of-text id, which is dropped)."""
    stopped = bool(tokens) and tokens[-1] in eot_ids
    keep = len(tokens) - 1 if stopped else len(tokens)
    top_logprobs = None
    if top is not None:
        top_logprobs = [list(zip(ids, values)) for ids, values in zip(top[0][:keep], top[1][:keep])]
    return Completion(tokens[:keep], logprobs[:keep], "stop" if stopped else "length", score, top_logprobs)


def _choose(ids: torch.Tensor, logits: torch.Tensor, processors: list[LogitsProcessor],
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens (B,) and the processed log-probabilities (B, V) they were chosen from."""
    scores = logits.float()
    for processor in processors:
        scores = processor(ids, scores)
    if generator is None:
        tokens = scores.argmax(dim=-1)  # (B,)
    else:
        tokens = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]  # (B,)
    return tokens, scores.log_softmax(dim=-1)


def generate_batch(model: Any, prompts: Sequence[Sequence[int]], config: GenerationConfig | None = None,
                   pad_id: int | None = None) -> list[list[Completion]]:
    """Greedy or sampled continuations of every prompt, decoded together in one batch.

    Returns one list per prompt of `config.num_return_sequences` `Completion`s (sampling draws
    them as separate rows, as Hugging Face does). `pad_id` fills the left padding and the finished
    rows (default: the first end-of-text id, else 0). Beam search is `beam.beam_search`.
    """
    config = GenerationConfig() if config is None else config
    if not isinstance(config, GenerationConfig):
        raise LmlabError(f"config must be a GenerationConfig, got {type(config).__name__}")
    if config.num_beams > 1:
        raise LmlabError(f"num_beams={config.num_beams} is beam search: call lmlab.generate.beam_search")
    prompts = check_prompts(prompts, model_vocab_size(model))
    copies = config.num_return_sequences
    if not config.max_new_tokens:
        return [[Completion([], [], "length") for _ in range(copies)] for _ in prompts]
    pad_id = default_pad_id(config) if pad_id is None else pad_id
    device = model_device(model)
    feed = BatchFeed(model)
    ids, mask = left_pad(prompts, pad_id, device)
    ids, mask = ids.repeat_interleave(copies, dim=0), mask.repeat_interleave(copies, dim=0)  # (R, T)
    rows, prompt_len = ids.shape
    processors = batch_processors(config, ids, mask)
    generator = seeded_generator(config, device)
    eot_ids = torch.tensor(config.eot_ids, dtype=torch.long, device=device)
    n_top = getattr(config, "top_logprobs", 0)

    # Growing buffers: processors and the model see the views [:, :length].
    ids = torch.cat([ids, torch.full((rows, config.max_new_tokens), pad_id, dtype=torch.long, device=device)], 1)
    mask = torch.cat([mask, torch.ones(rows, config.max_new_tokens, dtype=torch.bool, device=device)], 1)
    logprobs = torch.zeros(rows, config.max_new_tokens, device=device)
    top_ids = torch.zeros(rows, config.max_new_tokens, n_top, dtype=torch.long, device=device)
    top_values = torch.zeros(rows, config.max_new_tokens, n_top, device=device)
    running = torch.ones(rows, dtype=torch.bool, device=device)
    produced = torch.zeros(rows, dtype=torch.long, device=device)  # tokens per row, its end-of-text id included
    length = prompt_len
    with torch.inference_mode():
        logits = feed.start(ids[:, :length], mask[:, :length])  # (R, V)
        for step in range(config.max_new_tokens):
            tokens, log_probs = _choose(ids[:, :length], logits, processors, generator)
            logprobs[:, step] = log_probs.gather(1, tokens[:, None])[:, 0]
            if n_top:
                top_ids[:, step], top_values[:, step] = top_alternatives(log_probs, n_top)
            ids[:, length] = torch.where(running, tokens, pad_id)  # finished rows are fed the pad id
            length += 1
            produced += running.long()
            running &= ~torch.isin(ids[:, length - 1], eot_ids)
            if step + 1 == config.max_new_tokens or not bool(running.any()):
                break
            logits = feed.advance(ids[:, :length], mask[:, :length])

    eot = frozenset(config.eot_ids)
    new_ids, new_logprobs = ids[:, prompt_len:].tolist(), logprobs.tolist()
    completions = []
    for row, n in enumerate(produced.tolist()):
        top = (top_ids[row, :n].tolist(), top_values[row, :n].tolist()) if n_top else None
        completions.append(build_completion(new_ids[row][:n], new_logprobs[row][:n], eot, top=top))
    return [completions[p * copies:(p + 1) * copies] for p in range(len(prompts))]
