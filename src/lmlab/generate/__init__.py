"""Text generation over the model contract: processors, the greedy/sampling loop, streaming.

Here: `GenerationConfig` (Hugging Face option names), the logits processors (temperature, top-k,
top-p) and `build_processors`, the token loop `generate_ids` / `generate_tokens` (with
log-probabilities), and the text layer `TextStream`, `generate_text` (streaming) and `generate`.
`generate_sequences` (text.py) is the one text-level entry point for every strategy and any
number of prompts. Batched greedy/sampling over many prompts (`generate_batch`, `Completion`, `left_pad`) is in
batch.py and beam search (`beam_search`) in beam.py; both return `Completion` lists per prompt.
Models and tokenizers are used through their interfaces only.
"""
from lmlab.generate.batch import Completion, generate_batch, left_pad
from lmlab.generate.beam import beam_search
from lmlab.generate.config import GenerationConfig
from lmlab.generate.loop import GeneratedToken, generate_ids, generate_tokens
from lmlab.generate.processors import (
    LogitsProcessor,
    TemperatureProcessor,
    TopKProcessor,
    TopPProcessor,
    build_processors,
)
from lmlab.generate.stream import GenerationResult, TextStream, generate, generate_text
from lmlab.generate.text import GeneratedSequence, GenerationOutput, generate_sequences

__all__ = [
    "Completion",
    "GenerationConfig",
    "GeneratedToken",
    "GenerationOutput",
    "GenerationResult",
    "GeneratedSequence",
    "LogitsProcessor",
    "TemperatureProcessor",
    "TextStream",
    "TopKProcessor",
    "TopPProcessor",
    "beam_search",
    "build_processors",
    "generate",
    "generate_batch",
    "generate_ids",
    "generate_sequences",
    "generate_text",
    "generate_tokens",
    "left_pad",
]
