"""Where `lmlab.load` finds a model: an ordered table of sources, each a recogniser and a loader.

`load_source(path_or_name)` asks each source in `SOURCES`, in order, whether it recognises the
path, and returns what the first one loads: a `LoadedModel` (model, tokenizer, config, path). The
sources:
- huggingface: a directory whose config.json names a `model_type` (io/hf, one converter per type);
- run: any other directory, read as an lmlab run, whose errors say what is wrong with it;
- arpa: an .arpa or .arpa.gz file (io/arpa.py), with a word tokenizer over its vocabulary;
- gguf: a .gguf file (io/gguf.py): weights, tokenizer and chat template from the one file;
- name: a registered name (io/hub.py: `smollm2`), resolved to a local file (an installed package's,
  the hub cache's, or downloaded) that the other sources then load.
A new source is a recogniser, a loader and one `Source` row. Casting to a dtype, eval() and
quantizing are the caller's (lmlab.bundle.load); writing runs out is io/export.py's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.io.arpa import ARPA_SUFFIXES, read_arpa
from lmlab.io.gguf import load_gguf_model
from lmlab.io import hub
from lmlab.io.checkpoint import TOKENIZER_FILE, load_model_weights, read_run_config
from lmlab.io.hf import (build_loaded, converter_for, hf_eos_id, is_hf_model_dir, read_hf_config, read_hf_tokenizer,
                         read_with)
from lmlab.models import build_model
from lmlab.tokenize import Tokenizer, WordTokenizer
from lmlab.tokenize.chat import ChatTemplate
from lmlab.tokenize import load as load_tokenizer

GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class LoadedModel:
    """What a source loads: a model, its tokenizer, and its config, which holds at least
    {"model": {"family", "config"}, "source": the source's name}."""

    model: nn.Module
    tokenizer: Tokenizer
    config: dict[str, Any]
    path: Path
    chat_template: ChatTemplate | None = None  # how the model's conversations are written, if it has one


@dataclass(frozen=True)
class Source:
    name: str  # the loaded config's "source"
    what: str  # how messages speak of it: "an lmlab run directory"
    recognises: Callable[[Path], bool]
    load: Callable[[Path], LoadedModel]
    ready: bool = True  # False for a slot: recognised, but not loadable in this version


def checked_tokenizer(tokenizer: Tokenizer, vocab_size: int, source: Path) -> Tokenizer:
    """`tokenizer`, if the model has an embedding for each of its ids; else an LmlabError."""
    if tokenizer.vocab_size > vocab_size:
        raise LmlabError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{vocab_size}: it is not the one this run was trained with")
    return tokenizer


def load_run(path: Path) -> LoadedModel:
    """An lmlab run directory: config.json, model.safetensors and tokenizer.json."""
    config = read_run_config(path)
    try:
        model = build_model(config["model"]["family"], config["model"]["config"])
    except KeyError as e:
        raise LmlabError(f"{path}/config.json lacks {e}; the run directory is damaged") from None
    load_model_weights(path, model)
    tokenizer = checked_tokenizer(load_tokenizer(path / TOKENIZER_FILE), model.config.vocab_size, path / TOKENIZER_FILE)
    return LoadedModel(model, tokenizer, {**config, "source": "run"}, path)


def load_hf_dir(path: Path) -> LoadedModel:
    """A Hugging Face model directory, through the converter of its model_type, with the tokenizer beside it."""
    hf_config = read_hf_config(path)
    converter = converter_for(hf_config, path)
    config, state = read_with(converter, path, hf_config)
    model = build_loaded(converter.family, config, state, str(path))
    vocab_size = model.config.vocab_size
    tokenizer = read_hf_tokenizer(path, vocab_size, hf_eos_id(hf_config), converter.fallback_tokenizer)
    return LoadedModel(model, checked_tokenizer(tokenizer, vocab_size, path),
                       {"model": {"family": converter.family, "config": config}, "source": "huggingface"}, path)


def load_arpa(path: Path) -> LoadedModel:
    """An ARPA n-gram file with a word tokenizer over its vocabulary: words split at whitespace (as
    the file's were), every line end the sentence end </s>, unknown words <unk>."""
    model, vocab = read_arpa(path)
    tokenizer = WordTokenizer(vocab, split_punctuation=False, eos_per_line=True)
    return LoadedModel(model, tokenizer, {"model": {"family": "ngram", "config": model.config.to_dict()},
                                          "source": "arpa"}, path)


def load_gguf(path: Path) -> LoadedModel:
    """A GGUF file: weights dequantized, hyper-parameters, tokenizer and chat template from its metadata."""
    model, section, tokenizer, template = load_gguf_model(path)
    tokenizer = checked_tokenizer(tokenizer, model.config.vocab_size, path)
    return LoadedModel(model, tokenizer, {"model": section, "source": "gguf"}, path, template)


def load_registered(path: Path) -> LoadedModel:
    """A registered name (io/hub.py): its local file, fetched if need be, loaded by the source that reads it."""
    loaded = load_source(hub.locate(str(path)))
    return dataclasses.replace(loaded, config={**loaded.config, "name": str(path)})


def _is_arpa(path: Path) -> bool:
    return path.name.endswith(ARPA_SUFFIXES)


def _is_gguf(path: Path) -> bool:
    return path.name.lower().endswith(GGUF_SUFFIX)


def _is_registered(path: Path) -> bool:
    return not path.exists() and str(path) in hub.NAMES  # a file or folder of that name comes first


SOURCES: tuple[Source, ...] = (
    Source("huggingface", "a Hugging Face model directory", is_hf_model_dir, load_hf_dir),
    Source("run", "an lmlab run directory", Path.is_dir, load_run),
    Source("arpa", f"an ARPA file ({', '.join(ARPA_SUFFIXES)})", _is_arpa, load_arpa),
    Source("gguf", f"a GGUF file ({GGUF_SUFFIX})", _is_gguf, load_gguf),
    Source("name", "a registered model name", _is_registered, load_registered),
)


def _ready_sources() -> str:
    """The loadable sources, for messages: "an lmlab run directory, ... or a registered model name"."""
    whats = [source.what for source in SOURCES if source.ready]
    return ", ".join(whats[:-1]) + " or " + whats[-1]


def registered_names() -> str:
    """The registered names, for messages.

    >>> registered_names()
    'registered names: smollm2; `lmlab models` lists them'
    """
    names = hub.NAMES
    return f"registered names: {', '.join(names)}; `lmlab models` lists them" if names else "no names are registered"


def find_source(path_or_name: str | Path) -> Source:
    """The first source that recognises `path_or_name`, or an error that says what lmlab reads."""
    path = Path(path_or_name)
    for source in SOURCES:
        if source.recognises(path):
            return source
    if path.exists():
        raise LmlabError(f"{path} is a file lmlab does not read; give {_ready_sources()}")
    raise LmlabError(f"{path_or_name} is neither an existing file or folder nor a registered model name "
                     f"({registered_names()}); give {_ready_sources()}")


def load_source(path_or_name: str | Path) -> LoadedModel:
    """Load a model from a run directory, a Hugging Face directory, an ARPA file or a registered name."""
    return find_source(path_or_name).load(Path(path_or_name))
