"""Text in, text out: one entry point for every decoding strategy over one or many prompts.

`generate_sequences` takes a string, a list of strings, token ids or a list of token-id lists,
runs greedy / sampling (batch.py) or beam search (beam.py), and returns a `GenerationOutput`
whose `.sequences` hold each continuation's text, token ids and log-probability, prompts in
order. Stop strings are applied to the text (a stop string is never returned). Streaming one
prompt as it is generated is `stream.generate_text`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from lmlab.errors import LmlabError
from lmlab.generate.batch import Completion, generate_batch
from lmlab.generate.beam import beam_search
from lmlab.generate.config import GenerationConfig
from lmlab.generate.stream import CONTEXT_TOKENS, TextStream, with_tokenizer_eot

Prompts = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]


@dataclass(frozen=True)
class GeneratedSequence:
    """One continuation: its text (the prompt excluded), new token ids and their log-probability."""

    prompt_index: int
    text: str
    token_ids: list[int]
    logprob: float  # sum of the chosen tokens' log-probabilities (after the processors)
    finish_reason: str  # "stop" (end-of-text or a stop string) or "length"
    score: float | None = None  # beam search's length-normalised score
    token_logprobs: list[float] = field(default_factory=list, repr=False)
    top_logprobs: list[list[tuple[int, float]]] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GenerationOutput:
    sequences: list[GeneratedSequence]

    @property
    def text(self) -> str:
        """The first sequence's text (the usual case: one prompt, one sequence)."""
        return self.sequences[0].text


def prompt_ids(tokenizer: Any, prompts: Prompts) -> list[list[int]]:
    """Normalise any accepted prompt form to a list of token-id lists (empty -> end-of-text); numpy
    arrays and tensors of ids count as lists."""
    if hasattr(prompts, "tolist") and not isinstance(prompts, str):
        prompts = prompts.tolist()
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, Sequence) and prompts and all(isinstance(i, int) for i in prompts):
        prompts = [list(prompts)]
    if not isinstance(prompts, Sequence) or not prompts:
        raise LmlabError("give a prompt: a string, a list of strings, or token ids")
    result = []
    for n, prompt in enumerate(prompts):
        if not isinstance(prompt, (str, Sequence)):
            raise LmlabError(f"prompt {n} must be a string or a list of token ids, got {prompt!r:.80}")
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            if tokenizer.eot_id is None:
                raise LmlabError("a prompt is empty and this tokenizer has no end-of-text token to start from")
            ids = [tokenizer.eot_id]
        result.append(ids)
    return result


def generate_sequences(model: Any, tokenizer: Any, prompts: Prompts,
                       config: GenerationConfig | None = None) -> GenerationOutput:
    """Continue every prompt; `config.num_return_sequences` sequences per prompt, prompts in order."""
    config = with_tokenizer_eot(GenerationConfig() if config is None else config, tokenizer)
    ids = prompt_ids(tokenizer, prompts)
    decode = beam_search if config.num_beams > 1 else generate_batch
    sequences = []
    for index, (prompt, completions) in enumerate(zip(ids, decode(model, ids, config))):
        sequences.extend(_to_text(index, prompt, completion, tokenizer, config) for completion in completions)
    return GenerationOutput(sequences)


def _to_text(index: int, prompt: list[int], completion: Completion, tokenizer: Any,
             config: GenerationConfig) -> GeneratedSequence:
    stream = TextStream(tokenizer.decode_bytes, config.stop, context_ids=prompt[-CONTEXT_TOKENS:])
    pieces, kept, finish = [], len(completion.token_ids), completion.finish_reason
    for n, token_id in enumerate(completion.token_ids):
        pieces.append(stream.push(token_id))
        if stream.stopped:
            kept, finish = n + 1, "stop"
            break
    pieces.append(stream.flush())
    logprobs = completion.logprobs[:kept]
    top = completion.top_logprobs[:kept] if completion.top_logprobs is not None else None
    return GeneratedSequence(prompt_index=index, text="".join(pieces), token_ids=completion.token_ids[:kept],
                             logprob=math.fsum(logprobs), finish_reason=finish, score=completion.score,
                             token_logprobs=logprobs, top_logprobs=top)
