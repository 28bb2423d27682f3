"""lmlab: language models from n-grams to transformers.

`lmlab.load(path)` returns a ready `Bundle` (model + tokenizer + config); `lmlab.train.train(...)`
trains one. The layers, from the bottom: data, io, tokenize, models, generate,
train/evaluate/viz, and the adapters (bundle, cli).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lmlab.bundle import Bundle


def load(path_or_name: str, dtype: str = "float32", device: str = "cpu") -> "Bundle":
    """Load a model bundle from an lmlab run directory, a Hugging Face directory, an ARPA file or a
    registered name (see lmlab.bundle.load)."""
    from lmlab.bundle import load as load_bundle

    return load_bundle(path_or_name, dtype=dtype, device=device)


def __getattr__(name: str) -> Any:
    if name == "Bundle":
        from lmlab.bundle import Bundle

        return Bundle
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
