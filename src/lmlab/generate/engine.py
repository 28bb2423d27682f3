"""The decoding loop: one loop over a feed (feed.py) and a strategy (strategies.py, beam.py) that
applies one processor list (processors.py), emitting events.

`stream(model, prompts, config)` yields `Event`s as they come — each new token of each output
sequence with its id, the text it adds, its log-probability and the best alternatives, then the
sequence's end with its finish reason ("stop": an end-of-text id or a stop string; "length":
max_new_tokens). `generate(...)` reads the same events into one `Generation`. So the text of a
stream joined is always the text `generate` returns, for every family and strategy: greedy and
sampled tokens are emitted as they are chosen; beam search emits its best hypotheses when the
search ends. `Decoding` is one call's part of the loop apart from the model's state (prompts,
strategy, processors, outputs; `choose` is one step), so a server can step many calls in one
batch the way the loop steps one.

Prompts are a string or a list of strings (given a tokenizer), or token ids or a list of id lists,
decoded together in one left-padded batch. End-of-text ids (`config.eot_ids`, plus the
tokenizer's) end a sequence and are not returned; stop strings end it at the text level, the
stop string not returned, and need a tokenizer. A conditional model's encoder `memory` (one row
per prompt) is where every prefill starts. The loop does not change the model's train/eval mode:
call `model.eval()` first; inference mode never spans a `yield`.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from lmlab.errors import LmlabError, LmlabNotice
from lmlab.generate.beam import BeamSearch, Hypothesis
from lmlab.generate.config import GenerationConfig
from lmlab.generate.feed import Feed
from lmlab.generate.processors import build_processors
from lmlab.generate.strategies import Sampling
from lmlab.generate.text import CONTEXT_TOKENS, TextStream
from lmlab.models import device_of

Prompts = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]


@dataclass(frozen=True)
class Event:
    """One thing that happened to output sequence `sequence` (of prompt `prompt_index`): a new
    token (`token_id` set, with the `text` it adds — often "" while a character or a possible stop
    string is incomplete — its `logprob` and the `top_logprobs` alternatives when asked), or the
    sequence's end (`finish_reason` set, `text` the rest held back, beam search's `score`)."""

    sequence: int
    prompt_index: int
    token_id: int | None = None
    text: str = ""
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] | None = None
    finish_reason: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class GeneratedSequence:
    """One continuation: its text (the prompt excluded), its new token ids (an end-of-text id left
    out, the token that completed a stop string kept) and their log-probabilities."""

    prompt_index: int
    text: str
    token_ids: list[int]
    logprob: float  # sum of the tokens' log-probabilities (after the processors)
    finish_reason: str  # "stop" (end-of-text or a stop string) or "length"
    score: float | None = None  # beam search's length-normalised score (Hugging Face's sequences_scores)
    token_logprobs: list[float] = field(default_factory=list, repr=False)
    top_logprobs: list[list[tuple[int, float]]] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Generation:
    """Everything a call generated: `sequences` in order (prompt by prompt, num_return_sequences each)."""

    sequences: list[GeneratedSequence]

    @property
    def text(self) -> str:
        """The first sequence's text (the usual case: one prompt, one sequence)."""
        return self.sequences[0].text

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> "Generation":
        parts: dict[int, list[Event]] = {}
        for event in events:
            parts.setdefault(event.sequence, []).append(event)
        sequences = []
        for _, sequence in sorted(parts.items()):
            tokens = [e for e in sequence if e.token_id is not None]
            end = sequence[-1]
            logprobs = [e.logprob for e in tokens]
            top = [list(e.top_logprobs) for e in tokens] if tokens and tokens[0].top_logprobs is not None else None
            sequences.append(GeneratedSequence(
                prompt_index=end.prompt_index, text="".join(e.text for e in sequence),
                token_ids=[e.token_id for e in tokens], logprob=math.fsum(logprobs), finish_reason=end.finish_reason,
                score=end.score, token_logprobs=logprobs, top_logprobs=top))
        return cls(sequences)


def prompt_ids(tokenizer: Any, prompts: Prompts) -> list[list[int]]:
    """Any accepted prompt form as a list of token-id lists (an empty prompt starts from the
    end-of-text id, a fresh document); numpy arrays and tensors of ids count as lists."""
    if isinstance(prompts, (torch.Tensor,)) or type(prompts).__module__ == "numpy":
        prompts = prompts.tolist()
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, Sequence) and prompts and all(isinstance(i, numbers.Integral) for i in prompts):
        prompts = [list(prompts)]
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise LmlabError("give a prompt: a string, a list of strings, or token ids")
    result = []
    for n, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if tokenizer is None:
                raise LmlabError("text prompts need a tokenizer: pass tokenizer=, or give token ids")
            ids = tokenizer.encode(prompt)
        elif isinstance(prompt, Sequence) and not isinstance(prompt, bytes):
            ids = list(prompt)
        else:
            raise LmlabError(f"prompt {n} must be a string or a list of token ids, got {prompt!r:.80}")
        if not ids:
            eot_id = None if tokenizer is None else tokenizer.eot_id
            if eot_id is None:
                raise LmlabError(f"prompt {n} is empty and there is no end-of-text token to start from: give a prompt")
            ids = [eot_id]
        result.append(ids)
    return result


def check_prompts(prompts: list[list[Any]], vocab_size: int) -> list[list[int]]:
    """The prompts as lists of ints below `vocab_size`, or an error that says which one is wrong."""
    checked = []
    for n, prompt in enumerate(prompts):
        ids = [int(i) for i in prompt if isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0]
        if len(ids) != len(prompt):
            raise LmlabError(f"prompt {n} must hold integer token ids >= 0, got {list(prompt)!r:.80}")
        outside = sorted({i for i in ids if i >= vocab_size})
        if outside:
            raise LmlabError(f"prompt {n} holds token id(s) {outside[:10]} outside the model's vocabulary of "
                             f"{vocab_size} tokens: encode the prompt with the model's own tokenizer")
        checked.append(ids)
    return checked


def _note_cut_prompts(prompts: list[list[int]], context_len: int | None) -> None:
    """Say so (an LmlabNotice) when a prompt is longer than the model's context: the model then
    sees only its last context_len tokens, and the window slides on from there."""
    cut = [n for n, prompt in enumerate(prompts) if context_len is not None and len(prompt) > context_len]
    if cut:
        longest = max(len(prompts[n]) for n in cut)
        warnings.warn(LmlabNotice(f"prompt(s) {cut[:5]} hold up to {longest} tokens, more than the model's context of "
                                  f"{context_len}: the model sees the last {context_len}"), stacklevel=3)


class Output:
    """One output sequence as it is emitted: its text stream and how many tokens it has."""

    def __init__(self, index: int, prompt_index: int, prompt: list[int],
                 decode_bytes: Callable[[Sequence[int]], bytes] | None, stop: Sequence[str]) -> None:
        self.index, self.prompt_index = index, prompt_index
        self.text = None if decode_bytes is None else TextStream(decode_bytes, stop, prompt[-CONTEXT_TOKENS:])
        self.produced = 0
        self.finished = False

    @property
    def stopped(self) -> bool:
        """Whether a stop string has appeared in the text."""
        return self.text is not None and self.text.stopped

    def token(self, token_id: int, logprob: float, top: list[tuple[int, float]] | None) -> Event:
        self.produced += 1
        delta = self.text.push(token_id) if self.text is not None else ""
        return Event(self.index, self.prompt_index, token_id, delta, logprob, None if top is None else tuple(top))

    def finish(self, reason: str, score: float | None = None) -> Event:
        self.finished = True
        rest = self.text.flush() if self.text is not None else ""
        return Event(self.index, self.prompt_index, text=rest, finish_reason=reason, score=score)

    def emit(self, token_id: int, logprob: float, top: list[tuple[int, float]] | None, stop_ids: frozenset[int],
             max_new_tokens: int, score: float | None = None) -> Iterator[Event]:
        """The events one chosen token makes: the token (unless it ends the text), and the end if it came."""
        if token_id in stop_ids:
            yield self.finish("stop", score)
            return
        yield self.token(token_id, logprob, top)
        if self.stopped:
            yield self.finish("stop", score)
        elif self.produced == max_new_tokens:
            yield self.finish("length", score)

    def replay(self, best: Hypothesis, stop_ids: frozenset[int], max_new_tokens: int) -> Iterator[Event]:
        """The events of a finished beam, emitted token by token as if it had been chosen so."""
        top = best.top_logprobs or [None] * len(best.token_ids)
        for token_id, logprob, alternatives in zip(best.token_ids, best.logprobs, top):
            yield from self.emit(token_id, logprob, alternatives, stop_ids, max_new_tokens, best.score)
            if self.finished:
                return
        yield self.finish("length", best.score)


class Decoding:
    """One call's decoding apart from the model and its state: the checked prompt ids, the
    strategy, the processors and the output sequences. `choose` is one step of the loop — the
    processors over the strategy's scores, its choice, the events of the tokens it commits — so the
    loop below and a server that decodes many calls in one batch (lmlab/serve) step the same way."""

    def __init__(self, model: Any, prompts: Prompts, config: GenerationConfig, tokenizer: Any = None,
                 never: Sequence[int] = ()) -> None:
        if not isinstance(config, GenerationConfig):
            raise LmlabError(f"config must be a GenerationConfig, got {type(config).__name__}")
        if config.stop and tokenizer is None:
            raise LmlabError("stop strings are matched in the text: pass the tokenizer, or use eot_ids",
                             params=("stop",))
        eot_id = None if tokenizer is None else tokenizer.eot_id
        stop_ids = tuple(dict.fromkeys([*config.eot_ids, *([] if eot_id is None else [eot_id])]))
        self.prompts = check_prompts(prompt_ids(tokenizer, prompts), model.config.vocab_size)
        self.config = config
        self.max_new_tokens = config.max_new_tokens
        device = device_of(model)
        if config.num_beams > 1:
            self.strategy: Sampling | BeamSearch = BeamSearch(config, len(self.prompts), stop_ids, device)
        else:
            self.strategy = Sampling(config, device)
        decode_bytes = None if tokenizer is None else tokenizer.decode_bytes
        returned = config.num_return_sequences
        self.outputs = [Output(p * returned + k, p, prompt, decode_bytes, config.stop)
                        for p, prompt in enumerate(self.prompts) for k in range(returned)]
        prompt_len = max(len(prompt) for prompt in self.prompts)  # the feed's left-padded width
        self.processors = build_processors(config, prompt_len, model.config.vocab_size, stop_ids, never)
        self.stop_ids = frozenset(stop_ids)

    @property
    def finished(self) -> bool:
        return self.strategy.done or all(output.finished for output in self.outputs)

    def empty(self) -> list[Event]:
        """The events of asking for no new tokens at all."""
        return [output.finish("length", self.strategy.empty_score) for output in self.outputs]

    def choose(self, logits: torch.Tensor, history: torch.Tensor, step: int
               ) -> tuple[torch.Tensor, torch.Tensor | None, list[Event]]:
        """Step `step` given the next-token `logits` (R, V) of rows whose tokens so far are `history`
        (R, T): the next tokens (R,), the rows they continue (None: each its own) and the events."""
        with torch.inference_mode():
            scores = self.strategy.prepare(logits)
            for processor in self.processors:
                scores = processor(history, scores)
            tokens, source, committed = self.strategy.choose(scores, step)
        events = []
        for index, token_id, logprob, alternatives in committed:
            if not self.outputs[index].finished:
                events.extend(self.outputs[index].emit(token_id, logprob, alternatives, self.stop_ids,
                                                       self.max_new_tokens))
        return tokens, source, events

    def results(self) -> Iterator[Event]:
        """The events of what the strategy held back until the end (beam search's best hypotheses)."""
        for output, best in zip(self.outputs, self.strategy.results()):
            yield from output.replay(best, self.stop_ids, self.max_new_tokens)


def stream(model: Any, prompts: Prompts, config: GenerationConfig | None = None, *, tokenizer: Any = None,
           memory: Any = None, never: Sequence[int] = ()) -> Iterator[Event]:
    """The events of generating after every prompt (see the module docstring). Everything is
    checked now, not at the first event. `never`: ids never to produce (a model's padded rows)."""
    config = GenerationConfig() if config is None else config
    decoding = Decoding(model, prompts, config, tokenizer, never)
    _note_cut_prompts(decoding.prompts, model.context_len)
    feed = Feed(model, decoding.prompts, decoding.strategy.width, config.max_new_tokens, memory)
    return _decode(feed, decoding)


def _decode(feed: Feed, decoding: Decoding) -> Iterator[Event]:
    """The loop: prefill, then per step the decoding's choice and its events, and the next column
    fed; at the end, what the strategy held back."""
    if decoding.max_new_tokens == 0:
        yield from decoding.empty()
        return
    with torch.inference_mode():
        logits = feed.start()  # (R, V)
    for step in range(decoding.max_new_tokens):
        tokens, source, events = decoding.choose(logits, feed.history(), step)
        yield from events
        if decoding.finished:
            break
        with torch.inference_mode():
            logits = feed.advance(tokens, source)
    yield from decoding.results()


def generate(model: Any, prompts: Prompts, config: GenerationConfig | None = None, *, tokenizer: Any = None,
             memory: Any = None, never: Sequence[int] = ()) -> Generation:
    """Continue every prompt and return the whole `Generation` (the events of `stream`, read at once)."""
    return Generation.from_events(stream(model, prompts, config, tokenizer=tokenizer, memory=memory, never=never))
