"""The tokenizer beside Hugging Face weights: found when a directory is read, written when one is exported.

A directory may hold lmlab's own tokenizer file (`lmlab_tokenizer.json`, for the char and word
tokenizers transformers cannot express), a byte-level BPE `tokenizer.json`, or a `vocab.json` +
`merges.txt` pair; a converter may name a tokenizer to fall back on when there is none (GPT-2's
own, for its 50,257-token vocabulary). The tokenizers themselves live in lmlab/tokenize.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import tokenizers

from lmlab.atomic import atomic_write_text
from lmlab.errors import LmlabError
from lmlab.tokenize import BPETokenizer, Tokenizer
from lmlab.tokenize import load as load_tokenizer
from lmlab.tokenize.bpe import ByteLevelTokenizer, check_byte_level
from lmlab.tokenize.gpt2 import byte_level_bpe_from_files

LMLAB_TOKENIZER_IN_HF_DIR = "lmlab_tokenizer.json"
HF_TOKENIZER_FILE = "tokenizer.json"


def hf_eos_id(hf_config: dict[str, Any]) -> int | None:
    """The config's end-of-sequence id (the first, if it lists several).

    >>> hf_eos_id({"eos_token_id": [2, 7]}), hf_eos_id({"eos_token_id": True}), hf_eos_id({})
    (2, None, None)
    """
    eos = hf_config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    return eos if isinstance(eos, int) and not isinstance(eos, bool) else None


def read_hf_tokenizer(path: str | Path, vocab_size: int, eos_id: int | None,
                      fallback: Callable[[], Tokenizer] | None = None) -> Tokenizer:
    """The tokenizer beside Hugging Face weights: lmlab's own file, a byte-level tokenizer.json, a
    vocab.json + merges.txt pair, or else `fallback()` if its vocabulary is the model's `vocab_size`.
    The config's `eos_id` ends generation, whatever its token is called."""
    path = Path(path)
    if (path / LMLAB_TOKENIZER_IN_HF_DIR).exists():
        return load_tokenizer(path / LMLAB_TOKENIZER_IN_HF_DIR)
    if (path / HF_TOKENIZER_FILE).exists():
        try:
            hf = tokenizers.Tokenizer.from_file(str(path / HF_TOKENIZER_FILE))
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file
            raise LmlabError(f"{path / HF_TOKENIZER_FILE} is not a readable tokenizer file ({e})") from None
        check_byte_level(hf, path / HF_TOKENIZER_FILE)
    elif (path / "vocab.json").exists() and (path / "merges.txt").exists():
        hf = byte_level_bpe_from_files(str(path / "vocab.json"), str(path / "merges.txt"))
    elif fallback is not None and (default := fallback()).vocab_size == vocab_size:
        return default
    else:
        raise LmlabError(f"{path} has no {HF_TOKENIZER_FILE} (or vocab.json and merges.txt); add the tokenizer "
                         "the model was trained with")
    if eos_id is not None and eos_id < hf.get_vocab_size(with_added_tokens=True):
        token = hf.id_to_token(eos_id)
        if token is not None and all(33 <= ord(c) <= 126 for c in token):  # "</s>": the same in byte-level form
            hf.add_special_tokens([token])  # matched whole in text, written back as itself
    else:
        eos_id = None
    return BPETokenizer(hf, eot_id=eos_id)


def write_hf_tokenizer(tokenizer: Tokenizer, out_dir: str | Path) -> str:
    """Write `tokenizer` into a Hugging Face directory; returns the file name. Byte-level tokenizers
    (bpe, gpt2) become a Hugging Face tokenizer.json, the others lmlab_tokenizer.json."""
    out_dir = Path(out_dir)
    if isinstance(tokenizer, ByteLevelTokenizer):
        atomic_write_text(out_dir / HF_TOKENIZER_FILE, tokenizer.hf_tokenizer.to_str())
        return HF_TOKENIZER_FILE
    tokenizer.save(out_dir / LMLAB_TOKENIZER_IN_HF_DIR)
    return LMLAB_TOKENIZER_IN_HF_DIR
