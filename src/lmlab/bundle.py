"""`lmlab.load` and the `Bundle` it returns: a model, its tokenizer and its config, ready to use.

A bundle generates (`generate`, `stream`) and scores (`score`, `perplexity`) text. It reads lmlab
run directories, Hugging Face GPT-2 directories and ARPA n-gram files (.arpa, .arpa.gz: from
KenLM, SRILM or `lmlab export --format arpa`); GGUF files and registered names plug in here.
The network is in lmlab/models, decoding in lmlab/generate, files in lmlab/io.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import tokenizers
import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.evaluate import Perplexity, perplexity
from lmlab.generate import Event, Generation, GenerationConfig, generate, stream
from lmlab.generate.engine import Prompts
from lmlab.atomic import atomic_write_text, check_new_folder
from lmlab.io.checkpoint import MODEL_FILE, TOKENIZER_FILE, load_model_weights, load_tensors, read_run_config
from lmlab.io.hf import is_hf_model_dir, read_hf_config, read_hf_gpt2, write_hf_gpt2
from lmlab.models import Family, build_model, family_of
from lmlab.models.ngram_arpa import read_arpa, write_arpa
from lmlab.models.quantize import quantize_int8
from lmlab.tokenize import BPETokenizer, GPT2Tokenizer, Tokenizer, WordTokenizer
from lmlab.tokenize.bpe import ByteLevelTokenizer, check_byte_level
from lmlab.tokenize.gpt2 import byte_level_bpe_from_files
from lmlab.tokenize import load as load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.float32}
QUANTIZERS = {"int8": quantize_int8}  # applied after the cast: Linear layers become int8 (models/quantize.py)


@dataclass(frozen=True)
class Score:
    logprob: float  # natural-log probability of the text's tokens after the first
    tokens: int
    bytes: int


@dataclass
class Bundle:
    """One loaded model of some kind (models/registry.py) with its tokenizer and config: what it
    can do — generate, stream, score — is what its kind does."""

    model: nn.Module
    tokenizer: Tokenizer
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def family(self) -> Family:
        return family_of(self.model)

    def generation_config(self, **options: Any) -> GenerationConfig:
        """Check generation options (the names of Hugging Face `generate`) before any work."""
        return GenerationConfig.from_dict(options)

    def generate(self, prompt: Prompts, *, stream: bool = False, **options: Any) -> Generation | Iterator[Event]:
        """Continue a string, a list of strings, or token ids with any decoding strategy.

        Options have Hugging Face `generate` names (max_new_tokens, do_sample, temperature, top_k,
        top_p, num_beams, ...) plus presence_penalty, frequency_penalty, stop, seed, logprobs,
        top_logprobs. With `stream=True` it returns the events of `stream` instead.
        """
        if stream:
            return self.stream(prompt, **options)
        return generate(self.model, prompt, self.generation_config(**options), **self._decoding())

    def stream(self, prompt: Prompts, **options: Any) -> Iterator[Event]:
        """The generation's events as they come (token, text delta, log-probability, alternatives,
        finish reason); their text joined equals `generate(...).text`."""
        return stream(self.model, prompt, self.generation_config(**options), **self._decoding())

    @property
    def never_generated(self) -> range:
        """The model's padded embedding rows: ids past the tokenizer's vocabulary, never generated."""
        return range(self.tokenizer.vocab_size, self.model.config.vocab_size)

    def _decoding(self) -> dict[str, Any]:
        """What the decoding loop needs from this bundle besides the model."""
        if not self.family.generates:
            raise LmlabError(f"a {self.family.name} model is of kind {self.family.kind!r}, which does not generate "
                             "text; it scores and embeds")
        return {"tokenizer": self.tokenizer, "never": self.never_generated}

    def perplexity(self, text: str) -> Perplexity:
        return perplexity(self.model, self.tokenizer, text)

    def score(self, text: str) -> Score:
        result = self.perplexity(text)
        return Score(logprob=-result.loss * result.tokens, tokens=result.tokens, bytes=result.bytes)


LMLAB_TOKENIZER_IN_HF_DIR = "lmlab_tokenizer.json"


def load(path: str | Path, dtype: str = "float32") -> Bundle:
    """Load a ready-to-use model bundle from an lmlab run directory or a Hugging Face GPT-2 directory.

    `dtype`: "float32" (exact), "bfloat16", or "int8": every Linear layer runs as an int8 matmul
    (int8 weights, activations quantized per row on the fly; the rest stays float32), the fastest
    on CPUs (a quarter of the weight bytes per token) at a small cost in accuracy.
    """
    if dtype not in DTYPES:
        raise LmlabError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = Path(path)
    if is_hf_model_dir(path):
        bundle = _load_hf(path)
    elif path.name.endswith(ARPA_SUFFIXES):
        bundle = _load_arpa(path)
    else:
        bundle = _load_run(path)
    if family_of(bundle.model).kind != "counted":  # an n-gram's tables are probabilities, not weights: they stay float32
        bundle.model.to(DTYPES[dtype])
    bundle.model.eval()
    if dtype in QUANTIZERS:
        QUANTIZERS[dtype](bundle.model)
    return bundle


def _load_run(path: Path) -> Bundle:
    config = read_run_config(path)
    try:
        model = build_model(config["model"]["family"], config["model"]["config"])
    except KeyError as e:
        raise LmlabError(f"{path}/config.json lacks {e}; the run directory is damaged") from None
    load_model_weights(path, model)
    tokenizer = _checked_tokenizer(load_tokenizer(path / TOKENIZER_FILE), model.config.vocab_size, path / TOKENIZER_FILE)
    return Bundle(model=model, tokenizer=tokenizer, config=config, path=path)


def _checked_tokenizer(tokenizer: Tokenizer, vocab_size: int, source: Path) -> Tokenizer:
    """`tokenizer`, if the model has an embedding for each of its ids; else an LmlabError."""
    if tokenizer.vocab_size > vocab_size:
        raise LmlabError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{vocab_size}: it is not the one this run was trained with")
    return tokenizer


ARPA_SUFFIXES = (".arpa", ".arpa.gz")


def _load_arpa(path: Path) -> Bundle:
    """An ARPA n-gram file with a word tokenizer over its vocabulary: words split at whitespace (as
    the file's were), every line end the sentence end </s>, unknown words <unk>."""
    model, vocab = read_arpa(path)
    tokenizer = WordTokenizer(vocab, split_punctuation=False, eos_per_line=True)
    config = {"model": {"family": "ngram", "config": model.config.to_dict()}, "source": "arpa"}
    return Bundle(model=model, tokenizer=tokenizer, config=config, path=path)


def export_arpa(run_dir: str | Path, out_path: str | Path) -> list[str]:
    """Write an n-gram run as an ARPA file (compressed if the name ends in .gz) that KenLM and SRILM
    read; returns the file name written."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    if not out_path.name.endswith(ARPA_SUFFIXES):
        raise LmlabError(f"name the ARPA file *.arpa or *.arpa.gz, got {out_path.name}")
    bundle = _load_run(run_dir)
    if bundle.config["model"]["family"] != "ngram":
        raise LmlabError(f"only n-gram runs export to ARPA; {run_dir} is a {bundle.config['model']['family']} run")
    if not isinstance(bundle.tokenizer, WordTokenizer):
        raise LmlabError(f"ARPA files hold words: {run_dir} was trained with the {bundle.tokenizer.kind} tokenizer; "
                         f"train the n-gram with --tokenizer word to export it")
    write_arpa(bundle.model, out_path, bundle.tokenizer.vocab)
    return [out_path.name]


def _load_hf(path: Path) -> Bundle:
    hf_config = read_hf_config(path)
    if hf_config.get("model_type") != "gpt2":
        raise LmlabError(f"{path} holds a {hf_config.get('model_type')!r} model; lmlab reads Hugging Face "
                         f"GPT-2 directories here")
    model_config, state = read_hf_gpt2(path)
    model = build_model("gpt", model_config)
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:
        raise LmlabError(f"{path}: weights do not fit a GPT-2 of this config (missing {result.missing_keys[:3]})")
    config = {"model": {"family": "gpt", "config": model_config}, "source": "huggingface"}
    tokenizer = _checked_tokenizer(_hf_tokenizer(path, model_config["vocab_size"], _hf_eos_id(hf_config)),
                         model_config["vocab_size"], path)
    return Bundle(model=model, tokenizer=tokenizer, config=config, path=path)


def _hf_eos_id(hf_config: dict[str, Any]) -> int | None:
    """The config's end-of-sequence id (the first, if it lists several)."""
    eos = hf_config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    return eos if isinstance(eos, int) and not isinstance(eos, bool) else None


def _hf_tokenizer(path: Path, vocab_size: int, eos_id: int | None) -> Tokenizer:
    """The tokenizer beside Hugging Face weights: lmlab's own file, a byte-level tokenizer.json, a
    vocab.json + merges.txt pair, or, for a 50,257-token vocabulary with none, the GPT-2 tokenizer
    that ships with lmlab. The config's eos id ends generation, whatever its token is called."""
    if (path / LMLAB_TOKENIZER_IN_HF_DIR).exists():
        return load_tokenizer(path / LMLAB_TOKENIZER_IN_HF_DIR)
    if (path / "tokenizer.json").exists():
        try:
            hf = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file
            raise LmlabError(f"{path / 'tokenizer.json'} is not a readable tokenizer file ({e})") from None
        check_byte_level(hf, path / "tokenizer.json")
    elif (path / "vocab.json").exists() and (path / "merges.txt").exists():
        hf = byte_level_bpe_from_files(str(path / "vocab.json"), str(path / "merges.txt"))
    elif vocab_size == GPT2Tokenizer().vocab_size:
        return GPT2Tokenizer()
    else:
        raise LmlabError(f"{path} has no tokenizer.json (or vocab.json and merges.txt); add the tokenizer "
                         "the model was trained with")
    if eos_id is not None and eos_id < hf.get_vocab_size(with_added_tokens=True):
        token = hf.id_to_token(eos_id)
        if token is not None and all(33 <= ord(c) <= 126 for c in token):  # "</s>": the same in byte-level form
            hf.add_special_tokens([token])  # matched whole in text, written back as itself
    else:
        eos_id = None
    return BPETokenizer(hf, eot_id=eos_id)


def export_hf(run_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Write a GPT run as a Hugging Face GPT-2 directory; returns the file names written.

    Byte-level tokenizers (bpe, gpt2) are written as a Hugging Face tokenizer.json; char and word
    tokenizers, which transformers cannot express, as lmlab_tokenizer.json.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = read_run_config(run_dir)
    check_new_folder(out_dir)
    if config["model"]["family"] != "gpt":
        raise LmlabError(f"only GPT runs export to Hugging Face format; {run_dir} is a {config['model']['family']} run")
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    tensors, _ = load_tensors(run_dir / MODEL_FILE)
    write_hf_gpt2(config["model"]["config"], tensors, out_dir, generation_eos=tokenizer.eot_id)
    if isinstance(tokenizer, ByteLevelTokenizer):
        atomic_write_text(out_dir / "tokenizer.json", tokenizer.hf_tokenizer.to_str())
        return ["config.json", "model.safetensors", "tokenizer.json"]
    tokenizer.save(out_dir / LMLAB_TOKENIZER_IN_HF_DIR)
    return ["config.json", "model.safetensors", LMLAB_TOKENIZER_IN_HF_DIR]
