"""Hugging Face model directories: one converter per `model_type`, found through one table.

A directory as `save_pretrained` writes it (config.json naming a `model_type`, safetensors weights,
sharded or not, a tokenizer beside them) is read by the converter of its model_type and becomes an
lmlab model of that converter's family; an lmlab run of a family in `EXPORTS` is written back the
same way. What is where:
- files.py: recognise a directory, its checked config.json, the shard index, safetensors in and out;
- convert.py: the `Converter` record and the two directions, driven by the lmlab model's own state_dict;
- tokenizer.py: the tokenizer found beside the weights, and written beside them on export;
- gpt2.py: GPT-2 <-> lmlab GPT (the config mapping and the module rename table);
- llama.py: Llama <-> lmlab Llama (the same, with q, k and v fused into one projection).
A new model_type is one file like gpt2.py and one entry in `CONVERTERS` (and in `EXPORTS` if lmlab
runs of its family should export to it). Loading a directory as a whole is io/sources.py's job.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from lmlab.errors import LmlabError
from lmlab.io.hf.convert import Converter, Fused, build_loaded, expected_tensors, hf_directory, read_with, write_with
from lmlab.io.hf.files import HF_CONFIG_FILE, HF_WEIGHTS_FILE, is_hf_model_dir, read_hf_config, write_hf_files
from lmlab.io.hf.gpt2 import GPT2, read_hf_gpt2, write_hf_gpt2
from lmlab.io.hf.llama import LLAMA
from lmlab.io.hf.tokenizer import LMLAB_TOKENIZER_IN_HF_DIR, hf_eos_id, read_hf_tokenizer, write_hf_tokenizer

CONVERTERS: Mapping[str, Converter] = MappingProxyType({converter.model_type: converter for converter in (
    GPT2,
    LLAMA,
)})
# lmlab family -> the Hugging Face format its runs export to.
EXPORTS: Mapping[str, Converter] = MappingProxyType({"gpt": GPT2, "llama": LLAMA})


def converter_for(hf_config: Mapping[str, Any], source: object) -> Converter:
    """The converter of a config.json's model_type, or an error naming it and the supported ones.

    >>> converter_for({"model_type": "gpt2"}, "dir").family
    'gpt'
    """
    model_type = hf_config.get("model_type")
    if model_type not in CONVERTERS:
        raise LmlabError(f"{source} holds a Hugging Face model_type {model_type!r}, which lmlab does not read; "
                         f"it reads {', '.join(repr(name) for name in CONVERTERS)}")
    return CONVERTERS[model_type]


def export_converter(family: str, source: object) -> Converter:
    """The converter that writes runs of `family` as Hugging Face directories, or an error listing
    the families that have one."""
    if family not in EXPORTS:
        raise LmlabError(f"{source} is a {family} run; only {', '.join(EXPORTS)} runs export to Hugging Face format")
    return EXPORTS[family]


__all__ = ["CONVERTERS", "EXPORTS", "GPT2", "LLAMA", "HF_CONFIG_FILE", "HF_WEIGHTS_FILE", "LMLAB_TOKENIZER_IN_HF_DIR",
           "Converter", "Fused", "build_loaded", "converter_for", "expected_tensors", "export_converter",
           "hf_directory", "hf_eos_id", "is_hf_model_dir", "read_hf_config", "read_hf_gpt2", "read_hf_tokenizer",
           "read_with", "write_hf_files", "write_hf_gpt2", "write_hf_tokenizer", "write_with"]
