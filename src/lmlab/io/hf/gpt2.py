"""Hugging Face GPT-2 (model_type "gpt2") <-> lmlab's GPT: the config mapping and the module rename table.

Everything else — which tensors a GPT of a config has, their shapes, tied weights, reading the
files — comes from the model itself and io/hf/convert.py. HF GPT-2 stores its linear layers as
`Conv1D` with weight (in, out); lmlab uses `nn.Linear` (out, in), so those weights are transposed
both ways. `read_hf_gpt2` and `write_hf_gpt2` are this converter's two directions on their own;
`lmlab.load` and `export_hf` reach it through the table in io/hf/__init__.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from lmlab.errors import LmlabError
from lmlab.io.hf.convert import Converter, read_with, write_with
from lmlab.tokenize import GPT2Tokenizer

# HF activation_function -> lmlab activation ("gelu_new" and "gelu_fast" are the tanh approximation).
ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                       "gelu": "gelu", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}

# lmlab GPT module -> HF GPT2LMHeadModel module; {i} is the block number.
MODULES = {
    "tok_emb": "transformer.wte",
    "pos_emb": "transformer.wpe",
    "blocks.{i}.ln_1": "transformer.h.{i}.ln_1",
    "blocks.{i}.attn.qkv": "transformer.h.{i}.attn.c_attn",
    "blocks.{i}.attn.proj": "transformer.h.{i}.attn.c_proj",
    "blocks.{i}.ln_2": "transformer.h.{i}.ln_2",
    "blocks.{i}.mlp.fc": "transformer.h.{i}.mlp.c_fc",
    "blocks.{i}.mlp.proj": "transformer.h.{i}.mlp.c_proj",
    "ln_f": "transformer.ln_f",
    "lm_head": "lm_head",  # tied to wte: files hold one or the other (or both, equal)
}
CONV1D = frozenset({"blocks.{i}.attn.qkv", "blocks.{i}.attn.proj", "blocks.{i}.mlp.fc", "blocks.{i}.mlp.proj"})
# Causal-mask buffers of older checkpoints, and GPT2DoubleHeadsModel's classifier.
IGNORED = ("transformer.h.{i}.attn.bias", "transformer.h.{i}.attn.masked_bias", "multiple_choice_head.*")

# GPT2Config defaults, used when an (older) config.json leaves a key out, as transformers does.
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
}
HF_ALIASES = {"n_embd": "hidden_size", "n_positions": "max_position_embeddings",
              "n_head": "num_attention_heads", "n_layer": "num_hidden_layers"}
# What lmlab's GPT computes: a GPT-2 config.json with any other value is refused.
REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "add_cross_attention": False, "tie_word_embeddings": True}


def _hf_value(config: Mapping[str, Any], key: str) -> Any:
    if key in config:
        return config[key]
    if HF_ALIASES.get(key) in config:
        return config[HF_ALIASES[key]]
    return HF_DEFAULTS[key]


def gpt2_config_to_lmlab(hf_config: dict[str, Any]) -> dict[str, Any]:
    """Map a GPT-2 config.json to a GPTConfig-compatible dict; reject what lmlab's GPT cannot run.

    >>> gpt2_config_to_lmlab({"model_type": "gpt2", "n_embd": 32, "n_head": 2, "n_layer": 2,
    ...                       "n_positions": 64, "vocab_size": 100})["activation"]
    'gelu_tanh'
    """
    model_type = hf_config.get("model_type")
    if model_type != "gpt2":
        raise LmlabError(f"Hugging Face model_type {model_type!r} is not supported here; "
                         f"only GPT-2 (model_type \"gpt2\") directories can be read as an lmlab GPT")
    value = {key: _hf_value(hf_config, key) for key in HF_DEFAULTS}
    activation = value["activation_function"]
    if activation not in ACTIVATIONS_FROM_HF:
        raise LmlabError(f"GPT-2 activation_function {activation!r} is not supported; "
                         f"use one of {', '.join(ACTIVATIONS_FROM_HF)}")
    for key, expected in REQUIRED.items():
        if bool(value[key]) != expected:
            raise LmlabError(f"GPT-2 option {key}={value[key]} is not supported by lmlab's GPT; "
                             f"only models with {key}={expected} can be loaded")
    n_embd = value["n_embd"]
    if value["n_inner"] is not None and value["n_inner"] != 4 * n_embd:
        raise LmlabError(f"GPT-2 n_inner={value['n_inner']} is not supported; lmlab's GPT uses "
                         f"4 * n_embd = {4 * n_embd} (n_inner null)")
    return dict(vocab_size=value["vocab_size"], context_len=value["n_positions"], n_layer=value["n_layer"],
                n_head=value["n_head"], d_model=n_embd, dropout=0.0, bias=True, positional="learned",
                activation=ACTIVATIONS_FROM_HF[activation], norm_eps=float(value["layer_norm_epsilon"]))


def lmlab_config_to_gpt2(config: dict[str, Any], generation_eos: int | None = None) -> dict[str, Any]:
    """A GPT-2 config.json for an lmlab GPT config; `generation_eos` becomes bos_token_id and eos_token_id.

    >>> hf = lmlab_config_to_gpt2(dict(vocab_size=100, context_len=64, n_layer=2, n_head=2, d_model=32), 99)
    >>> hf["n_embd"], hf["activation_function"], hf["eos_token_id"]
    (32, 'gelu', 99)
    """
    for key in ("vocab_size", "context_len", "n_layer", "n_head", "d_model"):
        if key not in config:
            raise LmlabError(f"the model config lacks {key!r}; pass a GPT config (model.config of a run's config.json)")
    if config.get("positional", "learned") != "learned":
        raise LmlabError(f"Hugging Face GPT-2 has only learned positions, this model uses {config['positional']!r}; "
                         f"train with positional 'learned' to export it", params=("positional",))
    activation = config.get("activation", "gelu")
    if activation not in ACTIVATIONS_TO_HF:
        raise LmlabError(f"activation {activation!r} has no GPT-2 equivalent; use one of "
                         f"{', '.join(ACTIVATIONS_TO_HF)}", params=("activation",))
    if generation_eos is not None and not 0 <= generation_eos < config["vocab_size"]:
        raise LmlabError(f"generation_eos must be a token id in [0, {config['vocab_size']}), got {generation_eos}")
    dropout = float(config.get("dropout", 0.0))
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config["vocab_size"], "n_positions": config["context_len"], "n_ctx": config["context_len"],
        "n_embd": config["d_model"], "n_layer": config["n_layer"], "n_head": config["n_head"], "n_inner": None,
        "activation_function": ACTIVATIONS_TO_HF[activation],
        "layer_norm_epsilon": float(config.get("norm_eps", 1e-5)),
        "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
        **REQUIRED,
        "bos_token_id": generation_eos, "eos_token_id": generation_eos, "pad_token_id": None, "use_cache": True,
    }


GPT2 = Converter(
    model_type="gpt2", family="gpt",
    config_from_hf=gpt2_config_to_lmlab, config_to_hf=lmlab_config_to_gpt2,
    modules=MODULES, transposed=CONV1D, base_prefix="transformer.", ignored=IGNORED,
    zero_when_absent=("bias",),  # a GPT trained with bias=False is a GPT-2 with zero biases
    fallback_tokenizer=GPT2Tokenizer,  # the tokenizer of every GPT-2 with its 50,257-token vocabulary
)


def read_hf_gpt2(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a Hugging Face GPT-2 directory: (GPTConfig-compatible dict, state dict in lmlab names).

    The state dict has no `lm_head.weight` (lmlab ties it to `tok_emb.weight`), so load it with
    `model.load_state_dict(state, strict=False)`. Tensors keep their stored dtype.
    """
    return read_with(GPT2, path)


def write_hf_gpt2(config: dict[str, Any], state_dict: Mapping[str, torch.Tensor], out_dir: str | Path,
                  generation_eos: int | None = None) -> None:
    """Write an lmlab GPT as a Hugging Face GPT-2 directory: config.json + model.safetensors, atomically.

    `config` is a GPTConfig dict (as in a run's config.json under model.config); `generation_eos`,
    if given, becomes bos_token_id and eos_token_id. Only learned positions can be exported.
    """
    write_with(GPT2, config, state_dict, out_dir, generation_eos)
