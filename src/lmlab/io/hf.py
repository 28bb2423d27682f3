"""Hugging Face GPT-2 directories: read them into lmlab GPT weights, and write lmlab GPT weights out.

A Hugging Face model directory holds `config.json` (with a `model_type`) and `model.safetensors`
(or shards listed in `model.safetensors.index.json`), as `save_pretrained` writes them. Here:
- `is_hf_model_dir`, `read_hf_config`: recognise a directory and read its checked config.json;
- `read_hf_gpt2`: a GPT-2 directory -> (GPTConfig-compatible dict, state dict in lmlab names);
- `write_hf_gpt2`: the inverse, so vLLM / TGI / transformers can serve an lmlab GPT.
HF GPT-2 stores its linear layers as `Conv1D` with weight (in, out); lmlab uses `nn.Linear`
(out, in), so those weights are transposed both ways. Pickled weights (`pytorch_model.bin`) are
never read. This module works on plain dicts and tensors (io sits below lmlab/models); building
the model is the caller's job. Tokenizer files are not handled here (lmlab/tokenize).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmlab.atomic import atomic_write, atomic_write_json
from lmlab.errors import LmlabError

HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_INDEX_FILE = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# HF activation_function -> lmlab activation ("gelu_new" and "gelu_fast" are the tanh approximation).
ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                       "gelu": "gelu", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}

# Per-block module names, lmlab -> HF. The LINEAR ones are HF Conv1D: their weights get transposed.
BLOCK_NAMES = {"ln_1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
               "ln_2": "ln_2", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
LINEAR = {"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"}
TOP_NAMES = {"tok_emb": "wte", "pos_emb": "wpe", "ln_f": "ln_f"}

# GPT2Config defaults, used when an (older) config.json leaves a key out, as transformers does.
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
}
HF_ALIASES = {"n_embd": "hidden_size", "n_positions": "max_position_embeddings",
              "n_head": "num_attention_heads", "n_layer": "num_hidden_layers"}


def hf_name(name: str) -> str:
    """The HF GPT-2 tensor name (without the `transformer.` prefix) for an lmlab GPT tensor name.

    >>> hf_name("blocks.3.attn.qkv.weight")
    'h.3.attn.c_attn.weight'
    >>> hf_name("tok_emb.weight")
    'wte.weight'
    """
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) >= 4:
        module = ".".join(parts[2:-1])
        if module in BLOCK_NAMES:
            return f"h.{parts[1]}.{BLOCK_NAMES[module]}.{parts[-1]}"
    elif len(parts) == 2 and parts[0] in TOP_NAMES:
        return f"{TOP_NAMES[parts[0]]}.{parts[1]}"
    raise LmlabError(f"{name!r} is not a GPT-2 tensor; only lmlab GPT weights can be exported to Hugging Face")


def lmlab_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of an lmlab GPT with learned positions and biases, with its shape.

    >>> shapes = lmlab_shapes(dict(vocab_size=10, context_len=8, n_layer=1, d_model=4))
    >>> len(shapes), shapes["blocks.0.mlp.fc.weight"]
    (16, (16, 4))
    """
    C, V, P = config["d_model"], config["vocab_size"], config["context_len"]
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (V, C), "pos_emb.weight": (P, C)}
    for i in range(config["n_layer"]):
        for module, (out_dim, in_dim) in (("ln_1", (C, 0)), ("attn.qkv", (3 * C, C)), ("attn.proj", (C, C)),
                                          ("ln_2", (C, 0)), ("mlp.fc", (4 * C, C)), ("mlp.proj", (C, 4 * C))):
            shapes[f"blocks.{i}.{module}.weight"] = (out_dim, in_dim) if in_dim else (out_dim,)
            shapes[f"blocks.{i}.{module}.bias"] = (out_dim,)
    shapes["ln_f.weight"] = shapes["ln_f.bias"] = (C,)
    return shapes


def _is_linear_weight(name: str) -> bool:
    """True for the weight of an lmlab nn.Linear that HF GPT-2 stores as a Conv1D (transposed).

    >>> _is_linear_weight("blocks.0.mlp.fc.weight"), _is_linear_weight("blocks.0.ln_1.weight")
    (True, False)
    """
    parts = name.split(".")
    return parts[0] == "blocks" and parts[-1] == "weight" and ".".join(parts[2:-1]) in LINEAR


def is_hf_model_dir(path: str | Path) -> bool:
    """True if `path` is a directory whose config.json names a `model_type` (a Hugging Face model)."""
    config_path = Path(path) / HF_CONFIG_FILE
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "model_type" in config


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """Read a Hugging Face directory's config.json (it must name a `model_type`); errors say what to do."""
    path = Path(path)
    if not path.is_dir():
        raise LmlabError(f"{path} is not a directory; point at a Hugging Face model directory "
                         f"(config.json + model.safetensors, as written by save_pretrained)")
    config_path = path / HF_CONFIG_FILE
    if not config_path.is_file():
        raise LmlabError(f"{path} has no {HF_CONFIG_FILE}; point at a Hugging Face model directory "
                         f"as written by save_pretrained")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmlabError(f"{config_path} is not valid JSON ({e}); re-download or re-save the model") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise LmlabError(f"{config_path} has no model_type; it is not a Hugging Face model config")
    return config


def _hf_value(config: dict[str, Any], key: str) -> Any:
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
    for key, expected in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                          ("reorder_and_upcast_attn", False), ("add_cross_attention", False),
                          ("tie_word_embeddings", True)):
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


def _weight_files(path: Path) -> list[Path]:
    if (path / HF_WEIGHTS_FILE).is_file():
        return [path / HF_WEIGHTS_FILE]
    index_path = path / HF_INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise LmlabError(f"{index_path} is not a valid shard index ({e}); re-download or re-save the model") from None
        return [path / name for name in sorted(set(weight_map.values()))]
    if any((path / name).exists() for name in PICKLED_WEIGHTS):
        raise LmlabError(f"{path} has only pickled weights (pytorch_model.bin), which lmlab never loads; "
                         f"re-save the model with transformers' save_pretrained(..., safe_serialization=True)")
    raise LmlabError(f"{path} has no {HF_WEIGHTS_FILE}; save the model with transformers' save_pretrained")


def _read_safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise LmlabError(f"shard {file} is missing; re-download the model")
        try:
            tensors.update(load_file(file))
        except (SafetensorError, OSError) as e:
            raise LmlabError(f"{file} is not a readable safetensors file ({e}); re-download or re-save the model") from None
    return tensors


def _hf_to_lmlab_names(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Rename HF GPT-2 tensors to lmlab names and transpose Conv1D weights; drop what lmlab has no use for."""
    to_lmlab = {hf: lm for lm, hf in TOP_NAMES.items()}
    block_to_lmlab = {hf: lm for lm, hf in BLOCK_NAMES.items()}
    renamed: dict[str, torch.Tensor] = {}
    lm_head = None
    unknown = []
    for name, tensor in tensors.items():
        short = name.removeprefix("transformer.")
        parts = short.split(".")
        if short == "lm_head.weight":
            lm_head = tensor
        elif parts[0] == "multiple_choice_head" or (parts[0] == "h" and parts[2:] in (["attn", "bias"],
                                                                                         ["attn", "masked_bias"])):
            continue  # the classifier head of GPT2DoubleHeadsModel; causal-mask buffers of old checkpoints
        elif parts[0] == "h" and len(parts) >= 4 and ".".join(parts[2:-1]) in block_to_lmlab:
            lmlab_name = f"blocks.{parts[1]}.{block_to_lmlab['.'.join(parts[2:-1])]}.{parts[-1]}"
            if _is_linear_weight(lmlab_name):
                tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
            renamed[lmlab_name] = tensor.contiguous()
        elif len(parts) == 2 and parts[0] in to_lmlab:
            renamed[f"{to_lmlab[parts[0]]}.{parts[1]}"] = tensor
        else:
            unknown.append(name)
    if unknown:
        raise LmlabError(f"{source} holds tensors a GPT-2 model does not have ({', '.join(unknown[:3])}); "
                         f"it is not a plain GPT-2 checkpoint")
    if lm_head is not None:
        renamed.setdefault("tok_emb.weight", lm_head)  # a tied checkpoint may store only the head
    if lm_head is not None and not torch.equal(lm_head, renamed.get("tok_emb.weight", lm_head)):
        raise LmlabError(f"{source} has an lm_head that differs from its token embedding; "
                         f"lmlab's GPT ties them, so only tied GPT-2 models can be loaded")
    return renamed


def _check_shapes(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    missing = [name for name in expected if name not in tensors]
    extra = [name for name in tensors if name not in expected]
    wrong = [f"{name} {tuple(tensors[name].shape)} != {shape}" for name, shape in expected.items()
             if name in tensors and tuple(tensors[name].shape) != shape]
    if missing or extra or wrong:
        raise LmlabError(f"{source} does not match its config (missing: {missing[:3]}, unexpected: {extra[:3]}, "
                         f"wrong shape: {wrong[:3]}); the weights and config.json disagree")


def read_hf_gpt2(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a Hugging Face GPT-2 directory: (GPTConfig-compatible dict, state dict in lmlab names).

    The state dict has no `lm_head.weight` (lmlab ties it to `tok_emb.weight`), so load it with
    `model.load_state_dict(state, strict=False)`. Tensors keep their stored dtype.
    """
    path = Path(path)
    hf_config = read_hf_config(path)
    config = gpt2_config_to_lmlab(hf_config)
    state = _hf_to_lmlab_names(_read_safetensors(_weight_files(path)), path)
    _check_shapes(state, lmlab_shapes(config), str(path))
    return config, state


def _hf_state(config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lmlab GPT tensors -> HF GPT-2 tensors (`transformer.` names, Conv1D layout, one copy each)."""
    state = dict(state_dict)
    lm_head = state.pop("lm_head.weight", None)
    if lm_head is not None and "tok_emb.weight" in state and not torch.equal(lm_head, state["tok_emb.weight"]):
        raise LmlabError("lm_head.weight differs from tok_emb.weight; only GPTs with a tied LM head can be exported")
    expected = lmlab_shapes(config)
    if not config.get("bias", True):  # no biases is the same network as zero biases
        for name, shape in expected.items():
            if name.endswith(".bias") and name not in state:
                state[name] = torch.zeros(shape, dtype=next(iter(state.values()), torch.empty(0)).dtype)
    _check_shapes(state, expected, "the state dict")
    out = {}
    for name, tensor in state.items():
        if _is_linear_weight(name):
            tensor = tensor.t()  # Linear (out, in) -> Conv1D (in, out)
        out[f"transformer.{hf_name(name)}"] = tensor.detach().to("cpu").contiguous()
    return out


def write_hf_gpt2(config: dict[str, Any], state_dict: dict[str, torch.Tensor], out_dir: str | Path,
                  generation_eos: int | None = None) -> None:
    """Write an lmlab GPT as a Hugging Face GPT-2 directory: config.json + model.safetensors, atomically.

    `config` is a GPTConfig dict (as in a run's config.json under model.config); `generation_eos`,
    if given, becomes bos_token_id and eos_token_id. Only learned positions can be exported.
    """
    for key in ("vocab_size", "context_len", "n_layer", "n_head", "d_model"):
        if key not in config:
            raise LmlabError(f"the model config lacks {key!r}; pass a GPT config (model.config of a run's config.json)")
    if config.get("positional", "learned") != "learned":
        raise LmlabError(f"Hugging Face GPT-2 has only learned positions, this model uses {config['positional']!r}; "
                         f"train with --positional learned to export it")
    activation = config.get("activation", "gelu")
    if activation not in ACTIVATIONS_TO_HF:
        raise LmlabError(f"activation {activation!r} has no GPT-2 equivalent; use one of {', '.join(ACTIVATIONS_TO_HF)}")
    if generation_eos is not None and not 0 <= generation_eos < config["vocab_size"]:
        raise LmlabError(f"generation_eos must be a token id in [0, {config['vocab_size']}), got {generation_eos}")
    out_dir = Path(out_dir)
    existing = out_dir / HF_CONFIG_FILE
    if existing.exists() and not is_hf_model_dir(out_dir):
        raise LmlabError(f"{out_dir} already holds a {HF_CONFIG_FILE} that is not a Hugging Face config "
                         f"(an lmlab run?); export to a new directory")
    tensors = _hf_state(config, state_dict)
    dtype = str(tensors["transformer.wte.weight"].dtype).removeprefix("torch.")
    dropout = float(config.get("dropout", 0.0))
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config["vocab_size"], "n_positions": config["context_len"], "n_ctx": config["context_len"],
        "n_embd": config["d_model"], "n_layer": config["n_layer"], "n_head": config["n_head"], "n_inner": None,
        "activation_function": ACTIVATIONS_TO_HF[activation],
        "layer_norm_epsilon": float(config.get("norm_eps", 1e-5)),
        "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "bos_token_id": generation_eos, "eos_token_id": generation_eos, "pad_token_id": None,
        "tie_word_embeddings": True, "use_cache": True, "torch_dtype": dtype,
    }
    atomic_write(out_dir / HF_WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_json(existing, hf_config)  # config last: a directory with a config has its weights
