"""The pretrained GPT-2 tokenizer: byte-level BPE with 50,257 ids, identical to tiktoken's "gpt2".

Built with Hugging Face `tokenizers` from the vocab.json and merges.txt shipped in lmlab/assets/gpt2,
so it works offline and its file on disk only names it. The byte-level machinery shared with
trainable BPE is in bpe.py.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from lmlab.errors import LmlabError
from lmlab.tokenize.bpe import EOT, ByteLevelTokenizer


def byte_level_bpe_from_files(vocab: str, merges: str, special: Sequence[str] = (EOT,)) -> tokenizers.Tokenizer:
    """A GPT-2-style tokenizer from a vocab.json and merges.txt pair; `special` tokens (already in
    the vocabulary) are matched whole in text."""
    try:
        hf = tokenizers.Tokenizer(models.BPE.from_file(vocab, merges))
    except Exception as e:  # tokenizers raises a bare Exception for unreadable files
        raise LmlabError(f"cannot read {vocab} / {merges} as a BPE vocabulary and merges ({e})") from None
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([token for token in special if token in hf.get_vocab()])
    return hf


@lru_cache(maxsize=1)
def _gpt2_hf_tokenizer() -> tokenizers.Tokenizer:
    """Read the shipped files once; the Hugging Face tokenizer is immutable and thread-safe."""
    assets = resources.files("lmlab") / "assets" / "gpt2"
    with resources.as_file(assets / "vocab.json") as vocab, resources.as_file(assets / "merges.txt") as merges:
        return byte_level_bpe_from_files(str(vocab), str(merges))


class GPT2Tokenizer(ByteLevelTokenizer):
    """GPT-2's tokenizer; "<|endoftext|>" is id 50256 and the end-of-text id.

    >>> tok = GPT2Tokenizer()
    >>> tok.encode("Hello world<|endoftext|>")
    [15496, 995, 50256]
    >>> ids = tok.encode("🤗")
    >>> ids, tok.decode_bytes(ids[:1])  # raw bytes, so a streamer can wait for the rest
    ([8582, 97, 245], b'\\xf0\\x9f')
    """

    kind = "gpt2"

    def __init__(self) -> None:
        super().__init__(_gpt2_hf_tokenizer())

    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPT2Tokenizer":
        if data:
            raise LmlabError(f"a gpt2 tokenizer file has no settings, got keys {sorted(data)}; re-save it with lmlab")
        return cls()
