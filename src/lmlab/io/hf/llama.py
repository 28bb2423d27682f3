"""Hugging Face Llama (model_type "llama": Llama 2/3, TinyLlama, SmolLM2) <-> lmlab's Llama.

The config mapping and the module rename table; which tensors there are comes from the lmlab
model itself (io/hf/convert.py). lmlab fuses q, k and v into one projection (`attn.qkv`), which
Hugging Face stores as q_proj, k_proj and v_proj: with grouped-query attention k and v have
n_kv_head heads, so their sizes come from the config. The tokenizer beside the weights is a
byte-level tokenizer.json (io/hf/tokenizer.py).
"""
from __future__ import annotations

from typing import Any, Mapping

from lmlab.errors import LmlabError
from lmlab.io.hf.convert import Converter, Fused
from lmlab.models.llama import LlamaConfig


def _qkv_sizes(config: Mapping[str, Any]) -> tuple[int, int, int]:
    """Rows of q_proj, k_proj and v_proj for an lmlab Llama config.

    >>> _qkv_sizes(dict(d_model=576, n_head=9, n_kv_head=3))
    (576, 192, 192)
    """
    head_dim = config.get("head_dim") or config["d_model"] // config["n_head"]
    n_kv_head = config.get("n_kv_head") or config["n_head"]
    return config["n_head"] * head_dim, n_kv_head * head_dim, n_kv_head * head_dim


MODULES = {
    "tok_emb": "model.embed_tokens",
    "blocks.{i}.ln_1": "model.layers.{i}.input_layernorm",
    "blocks.{i}.attn.qkv": Fused(("model.layers.{i}.self_attn.q_proj", "model.layers.{i}.self_attn.k_proj",
                                  "model.layers.{i}.self_attn.v_proj"), sizes=_qkv_sizes),
    "blocks.{i}.attn.proj": "model.layers.{i}.self_attn.o_proj",
    "blocks.{i}.ln_2": "model.layers.{i}.post_attention_layernorm",
    "blocks.{i}.mlp.gate": "model.layers.{i}.mlp.gate_proj",
    "blocks.{i}.mlp.up": "model.layers.{i}.mlp.up_proj",
    "blocks.{i}.mlp.down": "model.layers.{i}.mlp.down_proj",
    "norm": "model.norm",
    "lm_head": "lm_head",
}
IGNORED = ("model.layers.{i}.self_attn.rotary_emb.inv_freq", "model.rotary_emb.inv_freq")  # older files save it
# What lmlab's Llama computes: any other value is refused.
REQUIRED = {"hidden_act": "silu", "pretraining_tp": 1}


def llama_config_to_lmlab(hf_config: dict[str, Any]) -> dict[str, Any]:
    """Map a Llama config.json to a LlamaConfig dict; refuse what lmlab's Llama does not compute.

    >>> llama_config_to_lmlab({"model_type": "llama", "vocab_size": 100, "hidden_size": 64,
    ...     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    ...     "num_key_value_heads": 2})["n_kv_head"]
    2
    """
    for key, expected in REQUIRED.items():
        if hf_config.get(key, expected) != expected:
            raise LmlabError(f"Llama option {key}={hf_config[key]!r} is not supported by lmlab's Llama; only "
                             f"models with {key}={expected!r} can be loaded")
    try:
        config = dict(vocab_size=hf_config["vocab_size"], d_model=hf_config["hidden_size"],
                      d_hidden=hf_config["intermediate_size"], n_layer=hf_config["num_hidden_layers"],
                      n_head=hf_config["num_attention_heads"])
    except KeyError as missing:
        raise LmlabError(f"the Llama config.json lacks {missing}; re-save the model with transformers") from None
    rope = hf_config.get("rope_parameters") or {}  # transformers 5 keeps rope_theta and rope_scaling here
    scaling = hf_config.get("rope_scaling") or ({k: v for k, v in rope.items() if k != "rope_theta"} or None)
    if scaling is not None:
        scaling = {"rope_type": scaling.get("rope_type", scaling.get("type", "default")),
                   **{k: v for k, v in scaling.items() if k not in ("type", "rope_type")}}
        if scaling["rope_type"] == "default":
            scaling = None
    config.update(
        n_kv_head=hf_config.get("num_key_value_heads") or config["n_head"],
        head_dim=hf_config.get("head_dim") or config["d_model"] // config["n_head"],
        context_len=hf_config.get("max_position_embeddings", 2048),
        rope_theta=float(hf_config.get("rope_theta", rope.get("rope_theta", 10000.0))),
        rope_scaling=scaling,
        norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
        attention_bias=bool(hf_config.get("attention_bias", False)),
        mlp_bias=bool(hf_config.get("mlp_bias", False)),
        tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
        dropout=0.0,
    )
    return config


def lmlab_config_to_llama(config: dict[str, Any], generation_eos: int | None = None) -> dict[str, Any]:
    """A Llama config.json for an lmlab Llama config; `generation_eos` becomes eos_token_id.

    >>> hf = lmlab_config_to_llama(dict(vocab_size=100, d_model=64, n_layer=2, n_head=4, n_kv_head=2), 99)
    >>> hf["num_key_value_heads"], hf["intermediate_size"], hf["eos_token_id"]
    (2, 192, 99)
    """
    llama = LlamaConfig.from_dict(config)
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": llama.vocab_size, "hidden_size": llama.d_model, "intermediate_size": llama.feed_forward_width,
        "num_hidden_layers": llama.n_layer, "num_attention_heads": llama.n_head,
        "num_key_value_heads": llama.n_kv_head or llama.n_head, "head_dim": llama.attention_head_dim,
        "max_position_embeddings": llama.context_len, "rope_theta": llama.rope_theta,
        "rope_scaling": llama.rope_scaling, "rms_norm_eps": llama.norm_eps,
        "attention_bias": llama.attention_bias, "mlp_bias": llama.mlp_bias,
        "tie_word_embeddings": llama.tie_embeddings, "hidden_act": "silu", "pretraining_tp": 1,
        "attention_dropout": llama.dropout, "bos_token_id": None, "eos_token_id": generation_eos,
        "pad_token_id": None, "use_cache": True,
    }


LLAMA = Converter(
    model_type="llama", family="llama",
    config_from_hf=llama_config_to_lmlab, config_to_hf=lmlab_config_to_llama,
    modules=MODULES, ignored=IGNORED,
)
