"""The tokenizer interface every tokenizer family implements, and its JSON file format.

A tokenizer maps text to integer ids and back. Each family (char, word, byte-level BPE, GPT-2)
is one subclass in its own file; `load` reads any of them back from its single JSON file.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from lmlab.errors import LmlabError
from lmlab.atomic import atomic_write_json

FORMAT_VERSION = 1
REGISTRY: dict[str, type["Tokenizer"]] = {}


class Tokenizer(ABC):
    """Text <-> ids. Subclasses set `kind` and implement the abstract methods."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            REGISTRY[cls.kind] = cls

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token strings and their ids (e.g. {"<|endoftext|>": 50256})."""
        return {}

    @property
    def eot_id(self) -> int | None:
        """End-of-text id that stops generation, or None if this tokenizer has none."""
        return None

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The UTF-8 bytes of `ids`; byte-level tokenizers return raw (possibly partial) bytes."""
        return self.decode(ids).encode("utf-8")

    def encode_array(self, text: str) -> np.ndarray:
        """Encode to a 1-D uint32 array (subclasses override this with a vectorised path)."""
        return np.asarray(self.encode(text), dtype=np.uint32)

    def id_to_token(self, token_id: int) -> str:
        """A readable form of one token, for tables and `lmlab tokenize`."""
        return self.decode([token_id])

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer (without "kind"/"format_version")."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer": ...

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"format_version": FORMAT_VERSION, "kind": self.kind, **self.to_dict()})


def load(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved with `Tokenizer.save`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmlabError(f"tokenizer file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise LmlabError(f"{path} is not a tokenizer JSON file ({e}); save one with Tokenizer.save") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise LmlabError(f"{path} is not an lmlab tokenizer file (no 'kind' field)")
    version = data.pop("format_version", None)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise LmlabError(
            f"{path} has tokenizer format version {version}; this lmlab reads up to "
            f"{FORMAT_VERSION}: upgrade lmlab (pip install -U lmlab)"
        )
    kind = data.pop("kind")
    if kind not in REGISTRY:
        raise LmlabError(f"{path}: unknown tokenizer kind {kind!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[kind].from_dict(data)
