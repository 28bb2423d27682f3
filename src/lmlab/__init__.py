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


def load(path: str, dtype: str = "float32") -> "Bundle":
    """Load a model bundle from an lmlab run directory (see lmlab.bundle.load)."""
    from lmlab.bundle import load as load_bundle

    return load_bundle(path, dtype=dtype)


def __getattr__(name: str) -> Any:
    if name == "Bundle":
        from lmlab.bundle import Bundle

        return Bundle
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
