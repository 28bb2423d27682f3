"""The greedy / sampling loop over the model contract, one prompt at a time, as token ids.

Works with any object that has `step(ids, state) -> (logits, state)` and `context_len`; it does
not import a model family. When the sequence outgrows `context_len` the loop keeps a sliding
window: it crops to the last `context_len` tokens and prefills again from `state=None`.
Text, streaming and stop strings are in `stream.py`; beam search will be in `beam.py`.
The loop does not change the model's train/eval mode: call `model.eval()` first.
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Sequence

import torch

from lmlab.errors import LmlabError
from lmlab.generate.config import GenerationConfig
from lmlab.generate.processors import LogitsProcessor, build_processors


class GeneratedToken(NamedTuple):
    """One new token and its log-probability under the distribution it was chosen from
    (after the processors, so top-k/top-p renormalise it; greedy uses the model's own)."""

    id: int
    logprob: float


def generate_ids(model: Any, prompt_ids: Sequence[int], config: GenerationConfig | None = None) -> Iterator[int]:
    """Yield new token ids one at a time after `prompt_ids`.

    Stops after `config.max_new_tokens` or at an id in `config.eot_ids` (not yielded). Stop
    strings are a text matter and are handled by `stream.generate_text`.
    """
    for token_id, _ in _decode(model, prompt_ids, config, with_logprobs=False):
        yield token_id


def generate_tokens(
    model: Any, prompt_ids: Sequence[int], config: GenerationConfig | None = None
) -> Iterator[GeneratedToken]:
    """Like `generate_ids`, but yield `GeneratedToken(id, logprob)` for each new token."""
    for token_id, logprob in _decode(model, prompt_ids, config, with_logprobs=True):
        yield GeneratedToken(token_id, logprob)


def model_vocab_size(model: Any) -> int | None:
    """The number of token ids the model reads (`model.config.vocab_size`), or None if it does not say."""
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def check_prompt_vocabulary(n: int, prompt_ids: Sequence[int], vocab_size: int | None) -> None:
    """An error naming prompt `n`'s ids that the model has no embedding for."""
    outside = sorted({i for i in prompt_ids if vocab_size is not None and i >= vocab_size})
    if outside:
        raise LmlabError(f"prompt {n} holds token id(s) {outside[:10]} outside the model's vocabulary of "
                         f"{vocab_size} tokens: encode the prompt with the model's own tokenizer")


def check_single_sequence(config: GenerationConfig) -> None:
    """This loop makes one sequence a token at a time: beams and several sequences need the batch decoders."""
    if config.num_beams > 1 or config.num_return_sequences > 1:
        raise LmlabError(
            f"token-by-token generation (streaming) makes one sequence, but num_beams={config.num_beams} and "
            f"num_return_sequences={config.num_return_sequences} were asked for: set both to 1, or generate "
            "without streaming")


def model_device(model: Any) -> torch.device:
    """Where the model's tensors live: `model.device`, else its first parameter or buffer, else CPU."""
    device = getattr(model, "device", None)
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return torch.device("cpu")


def _decode(
    model: Any, prompt_ids: Sequence[int], config: GenerationConfig | None, with_logprobs: bool
) -> Iterator[tuple[int, float]]:
    config = GenerationConfig() if config is None else config
    if not isinstance(config, GenerationConfig):
        raise LmlabError(f"config must be a GenerationConfig, got {type(config).__name__}")
    check_single_sequence(config)
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise LmlabError("the prompt is empty: give at least one token to continue from")
    if config.max_new_tokens == 0:
        return
    context_len = getattr(model, "context_len", None)
    if context_len is not None and context_len < 1:
        raise LmlabError(f"model.context_len must be >= 1 or None, got {context_len!r}")
    device = model_device(model)
    processors = build_processors(config, prompt_len=len(prompt_ids))
    eot_ids = frozenset(config.eot_ids)
    generator = None
    if not config.greedy:
        generator = torch.Generator(device=device)
        if config.seed is None:
            generator.seed()
        else:
            generator.manual_seed(config.seed)

    # Every token so far lives in one preallocated buffer; processors see the view ids[:, :length].
    length = len(prompt_ids)
    ids = torch.empty(1, length + config.max_new_tokens, dtype=torch.long, device=device)
    try:
        ids[0, :length] = torch.tensor(prompt_ids, dtype=torch.long)
    except (TypeError, RuntimeError, OverflowError) as e:
        raise LmlabError(f"prompt ids must be a list of integer token ids ({e})") from None
    if bool((ids[0, :length] < 0).any()):
        raise LmlabError(f"prompt ids must be token ids >= 0, got {prompt_ids[:10]!r}")
    check_prompt_vocabulary(0, prompt_ids, model_vocab_size(model))
    with torch.inference_mode():
        window = length if context_len is None else min(length, context_len)
        logits, state = model.step(ids[:, length - window : length], None)  # (1, V)
    for produced in range(1, config.max_new_tokens + 1):
        # No `with` block spans the yield: inference mode must not leak into the caller's code.
        with torch.inference_mode():
            token, logprob = _choose(ids[:, :length], logits, processors, generator, with_logprobs)
            token_id = int(token)  # the one host sync per step
        if token_id in eot_ids:
            return
        yield token_id, (float(logprob) if with_logprobs else 0.0)
        if produced == config.max_new_tokens:
            return
        with torch.inference_mode():
            ids[0, length] = token[0]
            length += 1
            if context_len is not None and window + 1 > context_len:
                logits, state = model.step(ids[:, length - context_len : length], None)  # slide
            else:
                window += 1
                logits, state = model.step(ids[:, length - 1 : length], state)  # (1, V)


def _choose(
    ids: torch.Tensor,
    logits: torch.Tensor,
    processors: list[LogitsProcessor],
    generator: torch.Generator | None,
    with_logprobs: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next token (shape (1,)) and, if asked, its log-probability, from logits (1, V)."""
    logits = logits.float()
    for processor in processors:
        logits = processor(ids, logits)
    if generator is None:
        token = logits.argmax(dim=-1)  # (1,)
    else:
        token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]  # (1,)
    if not with_logprobs:
        return token, None
    return token, logits.log_softmax(dim=-1)[0, token]
