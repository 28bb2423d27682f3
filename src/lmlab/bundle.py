"""`lmlab.load` and the `Bundle` it returns: a model, its tokenizer and its config, ready to use.

A bundle generates (`generate`, `stream`) and scores (`score`, `perplexity`) text. Today it reads
lmlab run directories; Hugging Face directories, GGUF files and registered names plug in here.
The network is in lmlab/models, decoding in lmlab/generate, files in lmlab/io.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.evaluate import Perplexity, perplexity
from lmlab.generate import GenerationConfig, GenerationResult, generate, generate_text
from lmlab.io.checkpoint import TOKENIZER_FILE, load_model_weights, read_run_config
from lmlab.models import build_model
from lmlab.tokenize import Tokenizer
from lmlab.tokenize import load as load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Score:
    logprob: float  # natural-log probability of the text's tokens after the first
    tokens: int
    bytes: int


@dataclass
class Bundle:
    model: nn.Module
    tokenizer: Tokenizer
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def generation_config(self, **options: Any) -> GenerationConfig:
        """Validate generation options (same names as Hugging Face `generate`) before any work."""
        return GenerationConfig.from_dict(options)

    def generate(self, prompt: str, **options: Any) -> GenerationResult:
        return generate(self.model, self.tokenizer, prompt, self.generation_config(**options))

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Text pieces as they are generated; joined they equal `generate(...).text`."""
        return generate_text(self.model, self.tokenizer, prompt, self.generation_config(**options))

    def perplexity(self, text: str) -> Perplexity:
        return perplexity(self.model, self.tokenizer, text)

    def score(self, text: str) -> Score:
        result = self.perplexity(text)
        return Score(logprob=-result.loss * result.tokens, tokens=result.tokens, bytes=result.bytes)


def load(path: str | Path, dtype: str = "float32") -> Bundle:
    """Load a ready-to-use model bundle from an lmlab run directory."""
    if dtype not in DTYPES:
        raise LmlabError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = Path(path)
    config = read_run_config(path)
    try:
        model = build_model(config["model"]["family"], config["model"]["config"])
    except KeyError as e:
        raise LmlabError(f"{path}/config.json lacks {e}; the run directory is damaged") from None
    load_model_weights(path, model)
    model.to(DTYPES[dtype]).eval()
    return Bundle(model=model, tokenizer=load_tokenizer(path / TOKENIZER_FILE), config=config, path=path)
