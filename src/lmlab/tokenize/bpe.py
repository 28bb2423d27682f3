"""Byte-level BPE (the GPT-2 scheme) trained on your own text with Hugging Face `tokenizers`.

Text is split by the GPT-2 pre-tokenization regex, each piece is turned into its UTF-8 bytes
(every byte shown as one printable character), and learned merges join bytes into tokens, so any
string is encodable and `decode(encode(text)) == text` exactly. `ByteLevelTokenizer` holds what
trained BPE and GPT-2 share; the pretrained GPT-2 vocabulary itself is in gpt2.py.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import regex
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmlab.errors import LmlabError
from lmlab.tokenize.base import Tokenizer

EOT = "<|endoftext|>"
CHUNK_CHARS = 1 << 16  # encode_array hands Hugging Face pieces of about this many characters

# Where the GPT-2 regex ends a piece whatever comes after the cut, so encoding the parts separately
# gives the same ids: before the last character of a whitespace run that ends in non-whitespace
# (the run minus its last character is one piece), or after a newline standing alone between two
# non-whitespace characters. Only ASCII whitespace is trusted; Python's \S never matches a
# character the Rust regex counts as whitespace.
_SAFE_CUT = re.compile(r"[\t\n\r ](?=[\t\n\r ]\S)|(?<=\S)\n(?=\S)")
# For any other pre-tokenizer (SmolLM2's digits first, Llama 3's, Qwen 2's): a space between two
# letters: the cut goes before the space, where every one of them ends a piece (a letter run stops there).
_WORD_GAP_CUT = regex.compile(r"(?<=\p{L})(?= \p{L})")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (printable ASCII maps to itself).

    >>> table = bytes_to_unicode()
    >>> table[ord("A")], table[ord(" ")], table[ord("\\n")], len(set(table.values()))
    ('A', 'Ġ', 'Ċ', 256)
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + i) for i, byte in enumerate(others)})
    return dict(sorted(table.items()))


def split_for_encoding(text: str, target_chars: int = CHUNK_CHARS, gpt2_pieces: bool = True) -> list[str]:
    """Cut `text` into parts of about `target_chars` at places where the pre-tokenizer ends a piece
    (the GPT-2 regex's places; with `gpt2_pieces=False`, only spaces between two letters).

    Encoding the parts separately and concatenating gives exactly the ids of encoding `text`.

    >>> split_for_encoding("one\\ntwo  three\\n\\n four", target_chars=1)
    ['one\\n', 'two ', ' three\\n\\n', ' four']
    >>> split_for_encoding("one\\ntwo  three\\n\\n four", target_chars=1, gpt2_pieces=False)
    ['one\\ntwo  three\\n\\n four']
    """
    boundary = _SAFE_CUT if gpt2_pieces else _WORD_GAP_CUT
    parts, start = [], 0
    while start < len(text):
        # a part holds at least one character, also where the boundary is an empty match
        cut = boundary.search(text, max(start + target_chars - 1, start + 1)) if start + target_chars < len(text) else None
        end = cut.end() if cut else len(text)
        parts.append(text[start:end])
        start = end
    return parts


def valid_unicode(text: str) -> str:
    """Replace lone surrogates (which have no UTF-8 form) by U+FFFD, as tiktoken does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class ByteLevelTokenizer(Tokenizer):
    """Shared by BPETokenizer and GPT2Tokenizer: a byte-level Hugging Face tokenizer plus raw bytes.

    Special tokens written in the text (e.g. "<|endoftext|>") encode to their special ids, as in
    Hugging Face; decoding writes them back out as text.
    """

    def __init__(self, hf_tokenizer: tokenizers.Tokenizer, eot_id: int | None = None) -> None:
        """`eot_id`: the end-of-text id, if not that of "<|endoftext|>" (another model's eos)."""
        self.hf_tokenizer = hf_tokenizer
        vocab = hf_tokenizer.get_vocab(with_added_tokens=True)
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise LmlabError("byte-level BPE ids must be 0..vocab_size-1 with no gaps; retrain the tokenizer with lmlab")
        added = hf_tokenizer.get_added_tokens_decoder()
        self._special_tokens = {token.content: i for i, token in sorted(added.items()) if token.special}
        byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        self._bytes: list[bytes] = [b""] * len(vocab)
        for token, token_id in vocab.items():
            if token_id in added:
                self._bytes[token_id] = token.encode("utf-8")
            elif all(char in byte_of for char in token):
                self._bytes[token_id] = bytes(byte_of[char] for char in token)
            else:
                raise LmlabError(f"token {token!r} is not byte-level; only byte-level BPE tokenizers can be loaded here")
        self._eot_id = self._special_tokens.get(EOT) if eot_id is None else eot_id
        if self._eot_id is not None and not 0 <= self._eot_id < len(vocab):
            raise LmlabError(f"the end-of-text id {self._eot_id} is outside the vocabulary of {len(vocab)} tokens")
        pre_tokenizer = json.loads(hf_tokenizer.to_str()).get("pre_tokenizer") or {}
        self._gpt2_pieces = pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True)

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_tokens)

    @property
    def eot_id(self) -> int | None:
        return self._eot_id

    def encode(self, text: str) -> list[int]:
        try:
            return self.hf_tokenizer.encode(text, add_special_tokens=False).ids
        except TypeError:  # Hugging Face rejects lone surrogates
            return self.hf_tokenizer.encode(valid_unicode(text), add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        """Encode in parallel: cut where pieces end anyway, then one `encode_batch_fast` call
        (no offsets computed; needs tokenizers >= 0.20)."""
        parts = split_for_encoding(text, gpt2_pieces=self._gpt2_pieces)
        try:
            encodings = self.hf_tokenizer.encode_batch_fast(parts, add_special_tokens=False)
        except TypeError:
            encodings = self.hf_tokenizer.encode_batch_fast([valid_unicode(p) for p in parts], add_special_tokens=False)
        arrays = [np.asarray(encoding.ids, dtype=np.uint32) for encoding in encodings]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The raw bytes of `ids`; a token can end in the middle of a UTF-8 character."""
        table, size = self._bytes, len(self._bytes)
        out = []
        for token_id in ids:
            if not 0 <= token_id < size:
                raise LmlabError(f"token id {token_id} is out of range for this {self.kind} tokenizer (vocab size {size})")
            out.append(table[token_id])
        return b"".join(out)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; bytes that do not form whole UTF-8 characters become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_token(self, token_id: int) -> str:
        """The token as Hugging Face spells it ("Ġthe" for " the")."""
        self.decode_bytes([token_id])  # checks the range
        return self.hf_tokenizer.id_to_token(token_id)


def check_byte_level(hf: tokenizers.Tokenizer, source: object) -> None:
    """A Hugging Face tokenizer that lmlab can run as byte-level BPE: a BPE model whose pre-tokenizer
    and decoder are ByteLevel (as GPT-2's); WordPiece, SentencePiece-style and others are refused
    rather than decoded wrongly."""
    spec = json.loads(hf.to_str())

    def kinds(part: dict[str, Any] | None) -> set[str]:
        if not part:
            return set()
        inner = part.get("pretokenizers") or part.get("decoders") or []
        return {part.get("type", "")}.union(*(kinds(p) for p in inner))

    if (spec.get("model") or {}).get("type") != "BPE" or "ByteLevel" not in kinds(spec.get("pre_tokenizer")) \
            or "ByteLevel" not in kinds(spec.get("decoder")):
        raise LmlabError(f"{source} is not a byte-level BPE tokenizer (GPT-2 style); lmlab reads only those "
                         "from Hugging Face directories")


class BPETokenizer(ByteLevelTokenizer):
    """Byte-level BPE trained on your text; the whole Hugging Face tokenizer is saved in our JSON.

    >>> tok = BPETokenizer.train(["low lower lowest"] * 10, vocab_size=264)
    >>> tok.vocab_size, tok.eot_id
    (264, 0)
    >>> [tok.id_to_token(i) for i in tok.encode(" lowest lowe")]
    ['Ġlowest', 'Ġlowe']
    """

    kind = "bpe"

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int = 4096,
        special_tokens: Sequence[str] = (EOT,),
        min_frequency: int = 2,
    ) -> "BPETokenizer":
        """Learn merges until `vocab_size` ids (256 bytes + special tokens + merges) or no pair
        occurs `min_frequency` times. Special tokens come first: "<|endoftext|>" is id 0."""
        special_tokens = [special_tokens] if isinstance(special_tokens, str) else list(special_tokens)
        if not all(isinstance(t, str) and t for t in special_tokens) or len(set(special_tokens)) != len(special_tokens):
            raise LmlabError(f"special_tokens must be distinct non-empty strings, got {special_tokens!r}")
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
            raise LmlabError(f"vocab_size must be at least 256 + {len(special_tokens)} special tokens, got {vocab_size!r}")
        hf = tokenizers.Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(_training_pieces(text, special_tokens), trainer=trainer)
        return cls(hf)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"hf_tokenizer": json.loads(self.hf_tokenizer.to_str())}
        if self.eot_id != self._special_tokens.get(EOT):  # another model's end-of-text (SmolLM2's <|im_end|>)
            data["eot_id"] = self.eot_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BPETokenizer":
        if "hf_tokenizer" not in data or set(data) - {"hf_tokenizer", "eot_id"}:
            raise LmlabError(f"bpe tokenizer file needs an 'hf_tokenizer' entry (and optionally 'eot_id'), got keys "
                             f"{sorted(data)}; re-save it with lmlab")
        try:
            hf = tokenizers.Tokenizer.from_str(json.dumps(data["hf_tokenizer"]))
        except Exception as e:  # the Rust side raises plain Exception on malformed JSON
            raise LmlabError(f"the saved Hugging Face tokenizer is invalid ({e}); retrain it with BPETokenizer.train") from None
        return cls(hf, eot_id=data.get("eot_id"))


def _training_pieces(text: str | Iterable[str], special_tokens: list[str]) -> Iterator[str]:
    """Training text in parts, with special tokens cut out so no merge learns their spelling."""
    specials = re.compile("|".join(map(re.escape, special_tokens))) if special_tokens else None
    for document in [text] if isinstance(text, str) else text:
        for part in split_for_encoding(valid_unicode(document), target_chars=1 << 20):
            yield from specials.split(part) if specials else [part]
