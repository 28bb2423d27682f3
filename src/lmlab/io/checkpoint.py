"""The run directory on disk: config.json, model.safetensors, train_state.safetensors.

- `config.json`: model family and config, tokenizer kind, training options, `format_version`.
- `model.safetensors`: the weights alone (what `lmlab.load` reads).
- `train_state.safetensors`: everything `--resume` needs in ONE file (weights, optimizer moments,
  RNG states, step), so a crash between two writes can never pair weights with the wrong optimizer.
Every write is atomic (lmlab/atomic.py). Nothing here is ever unpickled.
Tokenizer files live in lmlab/tokenize; Hugging Face and GGUF import/export live beside this file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lmlab.atomic import atomic_write, atomic_write_json
from lmlab.errors import LmlabError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.safetensors"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"


def write_run_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / CONFIG_FILE, {"format_version": FORMAT_VERSION, **config})


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """Read and check a run's config.json; errors say what to do."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.exists():
        raise LmlabError(f"run directory {run_dir} does not exist; train one with `lmlab train --out {run_dir}`")
    if not path.exists():
        raise LmlabError(f"{run_dir} is not an lmlab run directory (no {CONFIG_FILE}); "
                         f"point at the --out directory of `lmlab train`")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise LmlabError(f"{path} is not readable JSON ({e}); the run directory is damaged") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise LmlabError(f"{path} has no format_version; it was not written by lmlab")
    if version > FORMAT_VERSION:
        raise LmlabError(f"{run_dir} was written by a newer lmlab (format {version}, this one reads up to "
                         f"{FORMAT_VERSION}); upgrade with `pip install -U lmlab`")
    _check_sections(config, path)
    return config


def _check_sections(config: dict[str, Any], path: Path) -> None:
    """config.json's sections have the shape lmlab wrote: model {family, config}, tokenizer, train, data."""
    model = config.get("model")
    problem = None
    if not isinstance(model, dict) or not isinstance(model.get("family"), str) or not isinstance(model.get("config"), dict):
        problem = '"model" must hold a "family" name and a "config" object'
    else:
        problem = next((f'"{name}" must be an object' for name in ("tokenizer", "train", "data")
                        if not isinstance(config.get(name, {}), dict)), None)
    if problem:
        raise LmlabError(f"{path} is damaged: {problem}; restore it or train the run again")


def checkpoint_step(path: str | Path) -> int | None:
    """The training step a safetensors checkpoint was saved at (from its header), or None if unreadable."""
    try:
        with safe_open(path, framework="pt") as f:
            return int(_metadata(f.metadata()).get("step"))
    except (SafetensorError, OSError, ValueError, TypeError):
        return None


METADATA_KEY = "lmlab"  # all of lmlab's metadata, as one sorted JSON object: the header is byte-reproducible


def _metadata(raw: dict[str, str] | None) -> dict[str, Any]:
    """lmlab's metadata from a safetensors header (also files that kept one JSON value per key)."""
    raw = raw or {}
    if METADATA_KEY in raw:
        return json.loads(raw[METADATA_KEY])
    return {key: json.loads(value) for key, value in raw.items()}


def _unique_storage(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop names that share storage with an earlier name (tied weights); return (tensors, aliases)."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    unique, aliases = {}, {}
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor.detach().cpu().contiguous()  # files hold CPU tensors, wherever they trained
    return unique, aliases


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Write tensors as safetensors atomically; tied tensors are stored once and recorded as aliases."""
    unique, aliases = _unique_storage(tensors)
    # One key: safetensors writes several in a different order in every process.
    meta = {METADATA_KEY: json.dumps({**(metadata or {}), "aliases": aliases}, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(unique, tmp, metadata=meta))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read tensors written by `save_tensors`; aliases are restored as the same tensor."""
    path = Path(path)
    if not path.exists():
        raise LmlabError(f"{path} is missing; the run has no checkpoint yet (train it, or resume it to continue)")
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            meta = _metadata(f.metadata())
    except (SafetensorError, OSError, ValueError) as e:
        raise LmlabError(f"{path} is not a readable safetensors file ({e})") from None
    for name, target in meta.pop("aliases", {}).items():
        tensors[name] = tensors[target]
    return tensors, meta


def save_model_weights(run_dir: str | Path, model: torch.nn.Module, step: int) -> None:
    save_tensors(Path(run_dir) / MODEL_FILE, model.state_dict(), {"step": step})


def load_model_weights(run_dir: str | Path, model: torch.nn.Module) -> int:
    """Load model.safetensors into `model`; returns the training step it was saved at."""
    tensors, meta = load_tensors(Path(run_dir) / MODEL_FILE)
    _load_state(model, tensors, Path(run_dir) / MODEL_FILE)
    return int(meta.get("step", 0))


def _load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shapes that differ from config.json's
        first = str(e).strip().splitlines()[-1].strip()
        raise LmlabError(f"{source} does not fit the model in config.json ({first}); the run directory is "
                         "inconsistent") from None
    if result.missing_keys or result.unexpected_keys:
        raise LmlabError(f"{source} does not fit the model in config.json (missing: {result.missing_keys[:3]}, "
                         f"unexpected: {result.unexpected_keys[:3]}); the run directory is inconsistent")
