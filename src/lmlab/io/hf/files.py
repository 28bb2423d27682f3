"""The files of a Hugging Face model directory: config.json, safetensors weights and their shard index.

`save_pretrained` writes `config.json` (naming a `model_type`) and `model.safetensors`, or shards
listed in `model.safetensors.index.json`. Here: recognise such a directory, read its config.json
with checks, read all its tensors, and write a directory back atomically (weights first, config.json
last: a directory that has a config has its weights). Pickled weights (`pytorch_model.bin`) are
never read. What the tensors mean is a converter's business (io/hf/convert.py); the tokenizer
beside them is io/hf/tokenizer.py's.
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


def weight_files(path: Path) -> list[Path]:
    """The safetensors files holding a directory's weights: one file, or the shards its index lists."""
    if (path / HF_WEIGHTS_FILE).is_file():
        return [path / HF_WEIGHTS_FILE]
    index_path = path / HF_INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            return [path / name for name in sorted(set(weight_map.values()))]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise LmlabError(f"{index_path} is not a valid shard index ({e!r}); re-download or re-save the "
                             "model") from None
    if any((path / name).exists() for name in PICKLED_WEIGHTS):
        raise LmlabError(f"{path} has only pickled weights (pytorch_model.bin), which lmlab never loads; "
                         f"re-save the model with transformers' save_pretrained(..., safe_serialization=True)")
    raise LmlabError(f"{path} has no {HF_WEIGHTS_FILE}; save the model with transformers' save_pretrained")


def read_hf_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face directory, by its name in the files (shards merged), as stored."""
    tensors: dict[str, torch.Tensor] = {}
    for file in weight_files(Path(path)):
        if not file.is_file():
            raise LmlabError(f"shard {file} is missing; re-download the model")
        try:
            tensors.update(load_file(file))
        except (SafetensorError, OSError) as e:
            raise LmlabError(f"{file} is not a readable safetensors file ({e}); re-download or re-save the "
                             "model") from None
    return tensors


def write_hf_files(out_dir: str | Path, hf_config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write config.json and model.safetensors into `out_dir`, atomically and config last.

    A config.json already there must be a Hugging Face one (re-exporting over an earlier export);
    an lmlab run's config.json is never replaced.
    """
    out_dir = Path(out_dir)
    config_path = out_dir / HF_CONFIG_FILE
    if config_path.exists() and not is_hf_model_dir(out_dir):
        raise LmlabError(f"{out_dir} already holds a {HF_CONFIG_FILE} that is not a Hugging Face config "
                         f"(an lmlab run?); export to a new directory")
    atomic_write(out_dir / HF_WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_json(config_path, hf_config)
