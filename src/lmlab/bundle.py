"""`lmlab.load` and the `Bundle` it returns: a model, its tokenizer and its config, ready to use.

A bundle generates (`generate`, `stream`) and scores (`score`, `perplexity`) text. `load` finds
the model through the sources of lmlab/io/sources.py (lmlab run directories, Hugging Face
directories, ARPA n-gram files, and the GGUF and registered-name slots), then casts it to a dtype.
The network is in lmlab/models, decoding in lmlab/generate, files and export in lmlab/io.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.runtime import torch_device
from lmlab.evaluate import Perplexity, perplexity
from lmlab.generate import Event, Generation, GenerationConfig, generate, stream
from lmlab.generate.engine import Prompts
from lmlab.io.sources import load_source
from lmlab.models import Family, family_of
from lmlab.models.quantize import quantize_int8
from lmlab.tokenize import Tokenizer
from lmlab.tokenize.chat import ChatTemplate

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.float32}
QUANTIZERS = {"int8": quantize_int8}  # applied after the cast: Linear layers become int8 (models/quantize.py)


@dataclass(frozen=True)
class Score:
    logprob: float  # natural-log probability of the text's tokens after the first
    tokens: int
    bytes: int


@dataclass
class Bundle:
    """One loaded model of some kind (models/registry.py) with its tokenizer and config: what it
    can do — generate, stream, score — is what its kind does."""

    model: nn.Module
    tokenizer: Tokenizer
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    chat_template: ChatTemplate | None = None  # the model's own conversation format, if it has one

    @property
    def family(self) -> Family:
        return family_of(self.model)

    def generation_config(self, **options: Any) -> GenerationConfig:
        """Check generation options (the names of Hugging Face `generate`) before any work."""
        return GenerationConfig.from_dict(options)

    def generate(self, prompt: Prompts, *, stream: bool = False, **options: Any) -> Generation | Iterator[Event]:
        """Continue a string, a list of strings, or token ids with any decoding strategy.

        Options have Hugging Face `generate` names (max_new_tokens, do_sample, temperature, top_k,
        top_p, num_beams, ...) plus presence_penalty, frequency_penalty, stop, seed, logprobs,
        top_logprobs. With `stream=True` it returns the events of `stream` instead.
        """
        if stream:
            return self.stream(prompt, **options)
        return generate(self.model, prompt, self.generation_config(**options), **self._decoding())

    def stream(self, prompt: Prompts, **options: Any) -> Iterator[Event]:
        """The generation's events as they come (token, text delta, log-probability, alternatives,
        finish reason); their text joined equals `generate(...).text`."""
        return stream(self.model, prompt, self.generation_config(**options), **self._decoding())

    @property
    def never_generated(self) -> range:
        """The model's padded embedding rows: ids past the tokenizer's vocabulary, never generated."""
        return range(self.tokenizer.vocab_size, self.model.config.vocab_size)

    def _decoding(self) -> dict[str, Any]:
        """What the decoding loop needs from this bundle besides the model."""
        if not self.family.generates:
            raise LmlabError(f"a {self.family.name} model is of kind {self.family.kind!r}, which does not generate "
                             "text; it scores and embeds")
        return {"tokenizer": self.tokenizer, "never": self.never_generated}

    def perplexity(self, text: str) -> Perplexity:
        return perplexity(self.model, self.tokenizer, text)

    def score(self, text: str) -> Score:
        result = self.perplexity(text)
        return Score(logprob=-result.loss * result.tokens, tokens=result.tokens, bytes=result.bytes)


def load(path_or_name: str | Path, dtype: str = "float32", device: str = "cpu") -> Bundle:
    """Load a ready-to-use model bundle from an lmlab run directory, a Hugging Face model directory,
    an ARPA file or a registered name (the sources are in lmlab/io/sources.py).

    `dtype`: "float32" (exact), "bfloat16", or "int8": every Linear layer runs as an int8 matmul
    (int8 weights, activations quantized per row on the fly; the rest stays float32), the fastest
    on CPUs (a quarter of the weight bytes per token) at a small cost in accuracy. `device`: where
    the network runs ("cpu", "cuda", "cuda:1"); a counted model's tables stay on the CPU.
    """
    where = torch_device(device)
    if dtype not in DTYPES:
        raise LmlabError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", params=("dtype",))
    loaded = load_source(path_or_name)
    model = loaded.model
    if family_of(model).kind != "counted":  # an n-gram's tables are probabilities, not weights: they stay float32
        model.to(device=where, dtype=DTYPES[dtype])
    model.eval()
    if dtype in QUANTIZERS:
        QUANTIZERS[dtype](model)
    return Bundle(model=model, tokenizer=loaded.tokenizer, config=loaded.config, path=loaded.path,
                  chat_template=loaded.chat_template)
