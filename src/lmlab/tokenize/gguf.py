"""A tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.

A GGUF carries no tokenizer.json: it lists the tokens, their types and scores, the merges, the
special ids and the name of a pre-tokenizer. `read_vocab` reads those into a `GGUFVocab` (from a
path, an open `gguf.GGUFReader` or a plain dict of the fields) and `tokenizer_from_gguf` rebuilds
the Hugging Face tokenizer they describe, wrapped as an lmlab tokenizer:

- `tokenizer.ggml.model == "gpt2"`: byte-level BPE (SmolLM2, Llama 3, Qwen 2), text split by the
  regexes that `tokenizer.ggml.pre` names (`PRE_TOKENIZERS`), run as `BPETokenizer`.
- `tokenizer.ggml.model == "llama"`: SentencePiece-style BPE (Llama 2, TinyLlama): spaces are "▁",
  a "▁" is put before the text, pieces merge best score first, and characters outside the
  vocabulary fall back to `<0x..>` byte tokens; run as `SentencePieceTokenizer` (below).

A GGUF means what llama.cpp, whose format it is, does with it; transformers' GGUF loader agrees
except in three places, where lmlab follows llama.cpp (tests/test_gguf_tokenizer.py pins each):
"smollm" splits every digit off first (transformers drops that rule), and a "llama" vocabulary
puts "▁" before text that already starts with a space and before the text after a special token
(transformers does neither).

Control tokens (type 3, like `<|im_start|>`) and the unknown token become special tokens matched
whole in text; user-defined ones (type 4) are matched whole too, but are not special. Encoding
never adds BOS: `GGUFVocab.add_bos` says whether the model wants it. Chat templates are in chat.py;
the model's weights and hyper-parameters are io's business.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from lmlab.errors import LmlabError
from lmlab.tokenize.base import Tokenizer
from lmlab.tokenize.bpe import BPETokenizer, valid_unicode, bytes_to_unicode

# Token types, as llama.cpp numbers them in tokenizer.ggml.token_type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "▁"  # how a SentencePiece vocabulary writes " "

_GPT2_PIECES = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_PIECES = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_PIECES = _LLAMA3_PIECES.replace(r"\p{N}{1,3}", r"\p{N}")

# tokenizer.ggml.pre -> the regexes that cut text into pieces, applied in turn (as llama.cpp does);
# merges never cross a piece boundary.
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "gpt2": (_GPT2_PIECES,),
    "smollm": (r"\p{N}", _GPT2_PIECES),
    "llama-bpe": (_LLAMA3_PIECES,),
    "llama3": (_LLAMA3_PIECES,),
    "llama-v3": (_LLAMA3_PIECES,),
    "qwen2": (_QWEN2_PIECES,),
}

_FIELDS = {  # GGUFVocab field -> GGUF key
    "model": "tokenizer.ggml.model",
    "pre": "tokenizer.ggml.pre",
    "tokens": "tokenizer.ggml.tokens",
    "token_types": "tokenizer.ggml.token_type",
    "scores": "tokenizer.ggml.scores",
    "merges": "tokenizer.ggml.merges",
    "bos_id": "tokenizer.ggml.bos_token_id",
    "eos_id": "tokenizer.ggml.eos_token_id",
    "unk_id": "tokenizer.ggml.unknown_token_id",
    "pad_id": "tokenizer.ggml.padding_token_id",
    "add_bos": "tokenizer.ggml.add_bos_token",
    "add_space_prefix": "tokenizer.ggml.add_space_prefix",
    "chat_template": "tokenizer.chat_template",
}


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer a GGUF describes, as plain values (missing fields are None).

    >>> vocab = GGUFVocab.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"],
    ...                                  "tokenizer.ggml.eos_token_id": 1})
    >>> vocab.eos_token, vocab.token_types, vocab.add_bos
    ('b', (1, 1), False)
    """

    model: str
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    pre: str | None = None
    scores: tuple[float, ...] | None = None
    merges: tuple[str, ...] | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_space_prefix: bool = True
    chat_template: str | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "GGUFVocab":
        """From GGUF key/value pairs (`tokenizer.ggml.tokens` -> list of str, ...)."""
        values = {name: metadata[key] for name, key in _FIELDS.items() if metadata.get(key) is not None}
        for required in ("model", "tokens"):
            if required not in values:
                raise LmlabError(f"the GGUF has no {_FIELDS[required]}: it carries no tokenizer; "
                                 "give lmlab a tokenizer.json with the model instead")
        tokens = tuple(values["tokens"])
        values["tokens"] = tokens
        values["token_types"] = tuple(int(t) for t in values.get("token_types", [NORMAL] * len(tokens)))
        for name in ("scores", "merges"):
            if name in values:
                values[name] = tuple(values[name])
        if len(values["token_types"]) != len(tokens) or len(values.get("scores", tokens)) != len(tokens):
            raise LmlabError("the GGUF's token_type or scores list is not as long as its token list; the file is damaged")
        for name in ("bos_id", "eos_id", "unk_id", "pad_id"):
            if name in values and not 0 <= int(values[name]) < len(tokens):
                raise LmlabError(f"the GGUF's {_FIELDS[name]} {values[name]} is outside its {len(tokens)} tokens")
        if isinstance(values.get("chat_template"), (list, tuple)):  # named templates: keep the default one
            named = {t.get("name"): t.get("template") for t in values["chat_template"] if isinstance(t, Mapping)}
            values["chat_template"] = named.get("default")
        values.setdefault("add_bos", values["model"] == "llama")  # llama.cpp's default for SentencePiece
        return cls(**values)

    def token(self, token_id: int | None) -> str | None:
        return None if token_id is None else self.tokens[token_id]

    @property
    def bos_token(self) -> str | None:
        return self.token(self.bos_id)

    @property
    def eos_token(self) -> str | None:
        return self.token(self.eos_id)


def read_metadata(source: str | Path | Any) -> dict[str, Any]:
    """The `tokenizer.*` fields of a GGUF given as a path or an open `gguf.GGUFReader`, as plain
    Python values; a dict of fields is returned as it is."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, (str, Path)):
        import gguf  # imported here: reading a file is the only use

        path = Path(source)
        if not path.is_file():
            raise LmlabError(f"GGUF file {path} does not exist")
        try:
            source = gguf.GGUFReader(path)
        except Exception as e:  # the reader raises ValueError, struct.error, ... on a bad file
            raise LmlabError(f"{path} is not a readable GGUF file ({e}); check that the download finished") from None
    fields = getattr(source, "fields", None)
    if fields is None:
        raise LmlabError(f"expected a GGUF path, a gguf.GGUFReader or a dict of fields, got {type(source).__name__}")
    return {key: field.contents() for key, field in fields.items() if key.startswith("tokenizer.")}


def read_vocab(source: str | Path | Any) -> GGUFVocab:
    """The `GGUFVocab` of a GGUF path, an open `gguf.GGUFReader` or a dict of its fields."""
    return GGUFVocab.from_metadata(read_metadata(source))


def merges_from_scores(tokens: Sequence[str], scores: Sequence[float], token_types: Sequence[int]) -> list[tuple[str, str]]:
    """BPE merges that a SentencePiece vocabulary implies: every normal token that is two normal
    tokens joined is a merge, the higher the token's score the earlier. Two ways of making the
    same token (equal scores) go longer left part first, as transformers orders them.

    >>> merges_from_scores(["a", "b", "ab", "abb", "<s>"], [0, 0, -1, -2, 0], [1, 1, 1, 1, 3])
    [('a', 'b'), ('ab', 'b')]
    """
    normal = {token for token, kind in zip(tokens, token_types) if kind == NORMAL}
    ranked = []
    for token_id, (token, score, kind) in enumerate(zip(tokens, scores, token_types)):
        if kind != NORMAL:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in normal and right in normal:
                ranked.append((-score, -len(left), token_id, left, right))
    return [(left, right) for *_, left, right in sorted(ranked)]


def _split_merges(merges: Sequence[str]) -> list[tuple[str, str]]:
    pairs = [tuple(merge.split(" ")) for merge in merges]
    bad = next((merge for merge, pair in zip(merges, pairs) if len(pair) != 2), None)
    if bad is not None:
        raise LmlabError(f"the GGUF merge {bad!r} is not two tokens separated by one space; the file is damaged")
    return pairs  # type: ignore[return-value]


def _unique_vocab(tokens: Sequence[str]) -> dict[str, int]:
    vocab = {token: token_id for token_id, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        seen: set[str] = set()
        twice = next(token for token in tokens if token in seen or seen.add(token))
        raise LmlabError(f"the GGUF lists the token {twice!r} twice; lmlab needs each token once")
    return vocab


def _added_tokens(tokens: Sequence[str], token_types: Sequence[int], matchable: Any = None) -> tuple[list, list]:
    """(special, plain) added tokens: control and unknown tokens are special, user-defined ones
    plain; all are matched whole in text. `matchable(token)` can leave some out."""
    special, plain = [], []
    for token, kind in zip(tokens, token_types):
        if kind in (CONTROL, UNKNOWN, USER_DEFINED) and token and (matchable is None or matchable(token)):
            added = AddedToken(token, special=kind != USER_DEFINED, normalized=False)
            (plain if kind == USER_DEFINED else special).append(added)
    return special, plain


def byte_level_bpe(vocab: GGUFVocab) -> tokenizers.Tokenizer:
    """The Hugging Face tokenizer of a "gpt2" GGUF vocabulary (byte-level BPE).

    Tokens are spelled in GPT-2's byte alphabet; one that is not (a special token written in
    plain text with a space, say) is respelled from its UTF-8 bytes, and stays out of the
    tokens matched whole, since llama.cpp could not match it either.
    """
    if vocab.pre not in PRE_TOKENIZERS:
        raise LmlabError(f"lmlab does not know the GGUF pre-tokenizer {vocab.pre!r}; "
                         f"it knows {', '.join(sorted(PRE_TOKENIZERS))}")
    if vocab.merges is None:
        raise LmlabError("the GGUF's byte-level vocabulary has no tokenizer.ggml.merges; the file is damaged")
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    tokens = [token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))
              for token in vocab.tokens]
    hf = tokenizers.Tokenizer(models.BPE(vocab=_unique_vocab(tokens), merges=_split_merges(vocab.merges)))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in PRE_TOKENIZERS[vocab.pre]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    special, plain = _added_tokens(tokens, vocab.token_types, matchable=lambda token: set(token) <= alphabet)
    hf.add_special_tokens(special)
    hf.add_tokens(plain)
    return hf


def sentencepiece_bpe(vocab: GGUFVocab) -> tokenizers.Tokenizer:
    """The Hugging Face tokenizer of a "llama" GGUF vocabulary (SentencePiece-style BPE).

    Merges come from the file, or else from the scores (`merges_from_scores`). Spaces become "▁",
    and with `add_space_prefix` a "▁" goes before the text and before the text after each added
    token, as llama.cpp does.
    """
    if vocab.merges is not None:
        merges = _split_merges(vocab.merges)
    elif vocab.scores is not None:
        merges = merges_from_scores(vocab.tokens, vocab.scores, vocab.token_types)
    else:
        raise LmlabError("the GGUF's SentencePiece vocabulary has neither tokenizer.ggml.scores nor merges; the file is damaged")
    unk = vocab.token(vocab.unk_id)
    hf = tokenizers.Tokenizer(models.BPE(vocab=_unique_vocab(vocab.tokens), merges=merges, unk_token=unk,
                                         fuse_unk=True, byte_fallback=True))
    escape = normalizers.Replace(" ", SPACE)
    hf.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), escape]) if vocab.add_space_prefix else escape
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    hf.decoder = decoders.Sequence(steps + [decoders.Strip(" ", 1, 0)] if vocab.add_space_prefix else steps)
    special, plain = _added_tokens(vocab.tokens, vocab.token_types)
    hf.add_special_tokens(special)
    hf.add_tokens(plain)
    return hf


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece-style BPE vocabulary (Llama 2, TinyLlama) run by Hugging Face `tokenizers`.

    `decode_bytes` gives raw bytes ("▁" is a space, `<0x..>` its byte, an added token its text),
    less the one space that encoding puts before the text when `add_space_prefix` is set, so
    `decode(encode(text)) == text` for text that does not start with a space.
    """

    kind = "sentencepiece"

    def __init__(self, hf_tokenizer: tokenizers.Tokenizer, eot_id: int | None = None,
                 add_space_prefix: bool = True) -> None:
        self.hf_tokenizer = hf_tokenizer
        self.add_space_prefix = add_space_prefix
        vocab = hf_tokenizer.get_vocab(with_added_tokens=True)
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise LmlabError("SentencePiece ids must be 0..vocab_size-1 with no gaps; rebuild the tokenizer from its GGUF")
        added = hf_tokenizer.get_added_tokens_decoder()
        self._special_tokens = {token.content: i for i, token in sorted(added.items()) if token.special}
        self._bytes = [b""] * len(vocab)
        for token, token_id in vocab.items():
            byte = _BYTE_TOKEN.fullmatch(token)
            if token_id in added:
                self._bytes[token_id] = token.encode("utf-8")
            elif byte:
                self._bytes[token_id] = bytes([int(byte.group(1), 16)])
            else:
                self._bytes[token_id] = token.replace(SPACE, " ").encode("utf-8")
        if eot_id is not None and not 0 <= eot_id < len(vocab):
            raise LmlabError(f"the end-of-text id {eot_id} is outside the vocabulary of {len(vocab)} tokens")
        self._eot_id = eot_id

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

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes of `ids`; a byte token can end in the middle of a UTF-8 character."""
        table, size = self._bytes, len(self._bytes)
        out = []
        for token_id in ids:
            if not 0 <= token_id < size:
                raise LmlabError(f"token id {token_id} is out of range for this {self.kind} tokenizer (vocab size {size})")
            out.append(table[token_id])
        joined = b"".join(out)
        return joined[1:] if self.add_space_prefix and joined.startswith(b" ") else joined

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; bytes that do not form whole UTF-8 characters become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_token(self, token_id: int) -> str:
        """The token as the vocabulary spells it ("▁the" for " the")."""
        self.decode_bytes([token_id])  # checks the range
        return self.hf_tokenizer.id_to_token(token_id)

    def to_dict(self) -> dict[str, Any]:
        return {"hf_tokenizer": json.loads(self.hf_tokenizer.to_str()), "eot_id": self._eot_id,
                "add_space_prefix": self.add_space_prefix}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SentencePieceTokenizer":
        if set(data) != {"hf_tokenizer", "eot_id", "add_space_prefix"}:
            raise LmlabError("a sentencepiece tokenizer file needs exactly 'hf_tokenizer', 'eot_id' and "
                             f"'add_space_prefix', got keys {sorted(data)}; rebuild it from its GGUF")
        try:
            hf = tokenizers.Tokenizer.from_str(json.dumps(data["hf_tokenizer"]))
        except Exception as e:  # the Rust side raises plain Exception on malformed JSON
            raise LmlabError(f"the saved Hugging Face tokenizer is invalid ({e}); rebuild it from its GGUF") from None
        return cls(hf, eot_id=data["eot_id"], add_space_prefix=bool(data["add_space_prefix"]))


def _byte_level_tokenizer(vocab: GGUFVocab) -> Tokenizer:
    return BPETokenizer(byte_level_bpe(vocab), eot_id=vocab.eos_id)


def _sentencepiece_tokenizer(vocab: GGUFVocab) -> Tokenizer:
    return SentencePieceTokenizer(sentencepiece_bpe(vocab), eot_id=vocab.eos_id, add_space_prefix=vocab.add_space_prefix)


# tokenizer.ggml.model -> the lmlab tokenizer built from the vocabulary.
MODELS = {"gpt2": _byte_level_tokenizer, "llama": _sentencepiece_tokenizer}


def tokenizer_from_gguf(source: str | Path | Any) -> Tokenizer:
    """The lmlab tokenizer of a GGUF path, an open `gguf.GGUFReader`, a dict of its fields or a
    `GGUFVocab`; its `eot_id` is the GGUF's eos id.

    >>> tok = tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
    ...     "tokenizer.ggml.tokens": ["<|end|>", "a", "1", "Ġ", "ĠĠ", "Ġa"], "tokenizer.ggml.token_type": [3, 1, 1, 1, 1, 1],
    ...     "tokenizer.ggml.merges": ["Ġ Ġ", "Ġ a"], "tokenizer.ggml.eos_token_id": 0})
    >>> tok.encode("a a  1<|end|>"), tok.eot_id
    ([1, 5, 4, 2, 0], 0)
    """
    vocab = source if isinstance(source, GGUFVocab) else read_vocab(source)
    if vocab.model not in MODELS:
        raise LmlabError(f"lmlab cannot build the GGUF tokenizer model {vocab.model!r}; "
                         f"it builds {', '.join(sorted(MODELS))}")
    return MODELS[vocab.model](vocab)
