"""Text generation over the model contract: one decoding loop, its strategies and processors.

Here: `GenerationConfig` (Hugging Face option names, checked once), the logits processors and
`build_processors`, the feed (feed.py: model state, padding, sliding window, encoder memory), the
strategies (strategies.py: greedy and sampling; beam.py: beam search), the text stream (text.py:
UTF-8, graphemes, stop strings), and the loop (engine.py): `stream` yields `Event`s, `generate`
reads them into one `Generation`. Models and tokenizers are used through their interfaces only.
"""
from lmlab.generate.config import GenerationConfig
from lmlab.generate.engine import Event, GeneratedSequence, Generation, generate, prompt_ids, stream
from lmlab.generate.feed import left_pad
from lmlab.generate.processors import (
    LogitsProcessor,
    TemperatureProcessor,
    TopKProcessor,
    TopPProcessor,
    build_processors,
)
from lmlab.generate.text import TextStream

__all__ = [
    "Event",
    "GeneratedSequence",
    "Generation",
    "GenerationConfig",
    "LogitsProcessor",
    "TemperatureProcessor",
    "TextStream",
    "TopKProcessor",
    "TopPProcessor",
    "build_processors",
    "generate",
    "left_pad",
    "prompt_ids",
    "stream",
]
