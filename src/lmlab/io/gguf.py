"""GGUF files (llama.cpp's format) as lmlab models: hyper-parameters, weights, tokenizer, chat template.

A GGUF file holds key/value metadata (`general.architecture`, `llama.block_count`, ...,
`tokenizer.ggml.*`, `tokenizer.chat_template`) and tensors in llama.cpp's names, many of them
quantized. Here, read with the `gguf` package:
- `ARCHITECTURES`: the architectures lmlab computes, each a family and its metadata -> config
  mapping; any other is refused in one line that names it and lists these;
- the tensors dequantized to float32 (`gguf.quants.dequantize`) for the types in `TENSOR_TYPES`,
  renamed to lmlab's (`blk.3.attn_q` -> `blocks.3.attn.qkv`, q, k and v fused), with llama.cpp's
  reordering of the query and key rows undone: its converter interleaves the two halves of each
  head, which lmlab's (and Hugging Face's) rotary positions keep apart;
- the tokenizer (lmlab/tokenize/gguf.py) and chat template (lmlab/tokenize/chat.py) from the metadata.
Casting to a dtype is the caller's (lmlab.bundle.load); the source table is io/sources.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from lmlab.errors import LmlabError
from lmlab.models import build_model
from lmlab.tokenize.chat import ChatTemplate
from lmlab.tokenize.gguf import tokenizer_from_gguf

# The tensor types lmlab dequantizes (the gguf package's names).
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")


def llama_config(metadata: Mapping[str, Any], arch: str, tensor_names: set[str]) -> dict[str, Any]:
    """A LlamaConfig dict from `{arch}.*` metadata (as llama.cpp writes it for Llama-shaped models).

    >>> llama_config({"llama.block_count": 2, "llama.embedding_length": 64, "llama.feed_forward_length": 96,
    ...               "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
    ...               "llama.context_length": 128, "llama.vocab_size": 100}, "llama", set())["n_kv_head"]
    2
    """
    def value(key: str, default: Any = None) -> Any:
        found = metadata.get(f"{arch}.{key}", default)
        if found is None:
            raise LmlabError(f"the GGUF metadata lacks {arch}.{key}; the file is incomplete")
        return found

    d_model, n_head = int(value("embedding_length")), int(value("attention.head_count"))
    head_dim = int(metadata.get(f"{arch}.attention.key_length", d_model // n_head))
    if int(metadata.get(f"{arch}.rope.dimension_count", head_dim)) != head_dim:
        raise LmlabError("this GGUF rotates only part of each head (rope.dimension_count < head size), "
                         "which lmlab's Llama does not compute")
    if "rope_freqs.weight" in tensor_names:
        raise LmlabError("this GGUF scales its rotary frequencies with a rope_freqs tensor (Llama 3.1 style), "
                         "which lmlab does not read from GGUF yet; load the model's Hugging Face directory instead")
    scaling = None
    if metadata.get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
        kind = metadata[f"{arch}.rope.scaling.type"]
        if kind != "linear":
            raise LmlabError(f"GGUF rope scaling {kind!r} is not supported; lmlab reads linear scaling from GGUF")
        scaling = {"rope_type": "linear", "factor": float(value("rope.scaling.factor"))}
    vocab_size = metadata.get(f"{arch}.vocab_size") or len(metadata["tokenizer.ggml.tokens"])
    return dict(
        vocab_size=int(vocab_size), context_len=int(value("context_length")), n_layer=int(value("block_count")),
        n_head=n_head, n_kv_head=int(metadata.get(f"{arch}.attention.head_count_kv", n_head)), d_model=d_model,
        d_hidden=int(value("feed_forward_length")), head_dim=head_dim,
        rope_theta=float(metadata.get(f"{arch}.rope.freq_base", 10000.0)), rope_scaling=scaling,
        norm_eps=float(metadata.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        attention_bias="blk.0.attn_q.bias" in tensor_names, tie_embeddings="output.weight" not in tensor_names,
    )


# llama.cpp tensor (without .weight / .bias) -> lmlab module; {i} is the block number.
LLAMA_TENSORS = {
    "token_embd": "tok_emb",
    "blk.{i}.attn_norm": "blocks.{i}.ln_1",
    "blk.{i}.attn_output": "blocks.{i}.attn.proj",
    "blk.{i}.ffn_norm": "blocks.{i}.ln_2",
    "blk.{i}.ffn_gate": "blocks.{i}.mlp.gate",
    "blk.{i}.ffn_up": "blocks.{i}.mlp.up",
    "blk.{i}.ffn_down": "blocks.{i}.mlp.down",
    "output_norm": "norm",
    "output": "lm_head",
}
FUSED_QKV = ("attn_q", "attn_k", "attn_v")  # blk.{i}.attn_q/k/v -> blocks.{i}.attn.qkv, in this order


@dataclass(frozen=True)
class Architecture:
    family: str
    config: Callable[[Mapping[str, Any], str, set[str]], dict[str, Any]]
    tensors: Mapping[str, str]


ARCHITECTURES: Mapping[str, Architecture] = {
    "llama": Architecture("llama", llama_config, LLAMA_TENSORS),
}


def unpermute_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of a query or key projection's rows (or bias): within each head
    of D rows it stores the rows of the two halves interleaved (0, D/2, 1, D/2+1, ...); this puts
    them back in halves (0, 1, ..., D/2-1, D/2, ...), as the rotate-half convention reads them.

    >>> unpermute_rows(np.array([0, 4, 1, 5, 2, 6, 3, 7]), n_heads=1).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    rows = weight.shape[0]
    half = rows // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _open(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError, TypeError) as e:
        raise LmlabError(f"{path} is not a readable GGUF file ({str(e).strip().splitlines()[0][:120] if str(e) else e!r});"
                         " re-download it") from None


def _dequantized(tensor: Any, path: Path) -> np.ndarray:
    from gguf import quants

    kind = tensor.tensor_type.name
    if kind not in TENSOR_TYPES:
        raise LmlabError(f"{path}: tensor {tensor.name} is of type {kind}, which lmlab cannot dequantize; it reads "
                         f"{', '.join(TENSOR_TYPES)}")
    try:
        return np.array(quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)  # a copy: the file is mapped read-only
    except (ValueError, NotImplementedError) as e:
        raise LmlabError(f"{path}: tensor {tensor.name} ({kind}) could not be dequantized ({e}); the file is damaged") from None


def _lmlab_name(name: str, tensors: Mapping[str, str]) -> str | None:
    """blk.3.ffn_up.weight -> blocks.3.mlp.up.weight (None for a name the table lacks)."""
    stem, _, last = name.rpartition(".")
    parts = stem.split(".")
    number = parts[1] if parts[0] == "blk" and len(parts) > 2 else None
    key = f"blk.{{i}}.{'.'.join(parts[2:])}" if number is not None else stem
    if key not in tensors:
        return None
    return f"{tensors[key].replace('{i}', number or '')}.{last}"


def read_gguf(path: str | Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(family, lmlab config, float32 state dict in lmlab names, metadata) of a GGUF file."""
    path = Path(path)
    reader = _open(path)
    metadata = {key: field.contents() for key, field in reader.fields.items()}
    arch = metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise LmlabError(f"{path} holds a {arch!r} model, an architecture lmlab does not compute; it reads "
                         f"{', '.join(ARCHITECTURES)}")
    architecture = ARCHITECTURES[arch]
    names = {tensor.name for tensor in reader.tensors}
    config = architecture.config(metadata, arch, names)
    state: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for tensor in reader.tensors:
        stem, _, last = tensor.name.rpartition(".")
        parts = stem.split(".")
        if parts[0] == "blk" and len(parts) == 3 and parts[2] in FUSED_QKV:
            values = _dequantized(tensor, path)
            if parts[2] != "attn_v":  # queries and keys carry llama.cpp's row order
                heads = config["n_head"] if parts[2] == "attn_q" else config["n_kv_head"]
                values = unpermute_rows(values, heads)
            qkv.setdefault((parts[1], last), {})[parts[2]] = values
            continue
        name = _lmlab_name(tensor.name, architecture.tensors)
        if name is None:
            raise LmlabError(f"{path} holds a tensor {tensor.name} that a {arch} model does not have; the file is "
                             "not one lmlab can read")
        state[name] = torch.from_numpy(_dequantized(tensor, path))
    for (block, last), parts in qkv.items():
        if set(parts) != set(FUSED_QKV):
            raise LmlabError(f"{path}: block {block} lacks some of attn_q, attn_k, attn_v; the file is damaged")
        state[f"blocks.{block}.attn.qkv.{last}"] = torch.from_numpy(np.concatenate([parts[p] for p in FUSED_QKV]))
    return architecture.family, config, state, metadata


def load_gguf_model(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any], Any, ChatTemplate | None]:
    """(model, config section {"family", "config"}, tokenizer, chat template or None) of a GGUF file."""
    path = Path(path)
    family, config, state, metadata = read_gguf(path)
    model = build_model(family, config)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes other than the metadata's
        raise LmlabError(f"{path}: the tensors do not fit the model its metadata describes "
                         f"({str(e).strip().splitlines()[-1].strip()[:160]}); the file is damaged") from None
    missing = [name for name in result.missing_keys if not (name == "lm_head.weight" and config["tie_embeddings"])]
    if missing or result.unexpected_keys:
        raise LmlabError(f"{path}: the tensors do not fit the model its metadata describes (missing {missing[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}); the file is damaged")
    tokenizer = tokenizer_from_gguf(metadata)
    template = ChatTemplate.from_gguf(metadata) if metadata.get("tokenizer.chat_template") else None
    return model, {"family": family, "config": config}, tokenizer, template
