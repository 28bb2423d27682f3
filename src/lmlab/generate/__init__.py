"""Text generation over the model contract: processors, the greedy/sampling loop, streaming.

Here: `GenerationConfig` (Hugging Face option names), the logits processors (temperature, top-k,
top-p) and `build_processors`, the token loop `generate_ids` / `generate_tokens` (with
log-probabilities), and the text layer `TextStream`, `generate_text` (streaming) and `generate`.
Not here yet: beam search (it lands in generate/beam.py), penalties and the other processors,
batched generation. Models and tokenizers are used through their interfaces only.
"""
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

__all__ = [
    "GenerationConfig",
    "GeneratedToken",
    "GenerationResult",
    "LogitsProcessor",
    "TemperatureProcessor",
    "TextStream",
    "TopKProcessor",
    "TopPProcessor",
    "build_processors",
    "generate",
    "generate_ids",
    "generate_text",
    "generate_tokens",
]
