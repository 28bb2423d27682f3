"""Converters between Hugging Face checkpoints and lmlab models, driven by the lmlab model itself.

A `Converter` describes one Hugging Face `model_type`: the lmlab family it becomes, how the two
configs map onto each other, and a small rename table from lmlab module paths to Hugging Face
ones, `{"blocks.{i}.attn.qkv": "transformer.h.{i}.attn.c_attn", ...}` ({i} is a layer number;
a module keeps its tensors' last names, `weight` and `bias`). Beside the table: the modules whose
weights Hugging Face stores transposed (GPT-2's Conv1D), the modules it stores as several tensors
that lmlab fuses into one (`Fused`: q, k and v in one projection), and the tensors to skip.

Which tensors there are, and their shapes, is never written down. `expected_tensors` builds the
lmlab model of a config on the meta device (no memory, no initialisation) and reads them from its
`state_dict()`, including which names share one tensor (tied weights). Reading (`to_lmlab`) and
writing (`to_hf`) walk that list through the same table, one way or the other; a name the table
lacks is an error, so a module added to a model cannot be silently dropped.

Per-family tables are io/hf/<model_type>.py; the table of converters is io/hf/__init__.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.io.hf.files import read_hf_config, read_hf_tensors, write_hf_files
from lmlab.models import build_model
from lmlab.tokenize import Tokenizer


@dataclass(frozen=True)
class Fused:
    """One lmlab tensor that Hugging Face stores as several, concatenated along dim 0 (the output
    features) in the order of `parts`. `sizes(config)` gives each part's rows from the lmlab config
    (grouped-query attention has smaller k and v); without it the parts are equal."""

    parts: tuple[str, ...]
    sizes: Callable[[Mapping[str, Any]], tuple[int, ...]] | None = None


@dataclass(frozen=True)
class Converter:
    """A Hugging Face `model_type` as an lmlab `family`: configs both ways and the module rename table."""

    model_type: str
    family: str
    config_from_hf: Callable[[dict[str, Any]], dict[str, Any]]  # config.json -> lmlab config (checked)
    config_to_hf: Callable[[dict[str, Any], int | None], dict[str, Any]]  # (lmlab config, eos id) -> config.json
    modules: Mapping[str, str | Fused]  # lmlab module path -> Hugging Face module path(s)
    transposed: frozenset[str] = frozenset()  # lmlab module paths whose weight HF stores as (in, out)
    base_prefix: str = ""  # what older files leave off their names ("transformer." in GPT-2 files)
    ignored: tuple[str, ...] = ()  # HF tensor names lmlab has no use for ({i}: a layer; a trailing *: anything)
    zero_when_absent: tuple[str, ...] = ()  # last names ("bias") HF always has: a model without them writes zeros
    fallback_tokenizer: Callable[[], Tokenizer] | None = None  # when a directory has no tokenizer files

    def __post_init__(self) -> None:
        if not self.transposed <= set(self.modules):
            raise ValueError(f"converter {self.model_type}: transposed modules not in its table: "
                             f"{sorted(self.transposed - set(self.modules))}")

    @cached_property
    def _to_hf(self) -> list[tuple[re.Pattern[str], str, tuple[str, ...]]]:
        return [(_compile(module), module, target.parts if isinstance(target, Fused) else (target,))
                for module, target in self.modules.items()]

    @cached_property
    def _from_hf(self) -> list[tuple[re.Pattern[str], str, int]]:
        return [(_compile(part), module, index) for _, module, parts in self._to_hf for index, part in enumerate(parts)]

    @cached_property
    def _ignored(self) -> list[re.Pattern[str]]:
        return [_compile(name) for name in self.ignored]

    @cached_property
    def _transposed(self) -> list[re.Pattern[str]]:
        return [_compile(module) for module in self.transposed]

    def hf_names(self, name: str) -> tuple[str, ...] | None:
        """The Hugging Face name(s) of lmlab tensor `name` (several for a `Fused` module), or None.

        >>> from lmlab.io.hf.gpt2 import GPT2
        >>> GPT2.hf_names("blocks.3.attn.qkv.weight"), GPT2.lmlab_name("h.3.attn.c_attn.weight")
        (('transformer.h.3.attn.c_attn.weight',), ('blocks.3.attn.qkv.weight', 0))
        """
        module, _, leaf = name.rpartition(".")
        for pattern, _, parts in self._to_hf:
            match = pattern.fullmatch(module)
            if match:
                return tuple(f"{part.format(**match.groupdict())}.{leaf}" for part in parts)
        return None

    def lmlab_name(self, hf_name: str) -> tuple[str, int] | None:
        """(lmlab tensor name, which part of it) for a Hugging Face tensor name, or None if it has none.
        Names that older files wrote without `base_prefix` are found too."""
        for candidate in dict.fromkeys((hf_name, self.base_prefix + hf_name)):
            module, _, leaf = candidate.rpartition(".")
            for pattern, lmlab_module, index in self._from_hf:
                match = pattern.fullmatch(module)
                if match:
                    return f"{lmlab_module.format(**match.groupdict())}.{leaf}", index
        return None

    def is_ignored(self, hf_name: str) -> bool:
        return any(p.fullmatch(n) for p in self._ignored for n in (hf_name, self.base_prefix + hf_name))

    def is_transposed(self, name: str) -> bool:
        """True for the weight of a module that HF stores as (in, out) and lmlab as (out, in)."""
        module, _, leaf = name.rpartition(".")
        return leaf == "weight" and any(pattern.fullmatch(module) for pattern in self._transposed)

    def split_sizes(self, name: str, rows: int, config: Mapping[str, Any]) -> list[int]:
        """Rows of each Hugging Face part of lmlab tensor `name` (one part unless its module is `Fused`)."""
        module = name.rpartition(".")[0]
        for pattern, lmlab_module, parts in self._to_hf:
            if pattern.fullmatch(module):
                target = self.modules[lmlab_module]
                if isinstance(target, Fused) and target.sizes is not None:
                    return list(target.sizes(config))
                return [rows // len(parts)] * len(parts)
        return [rows]


def _compile(template: str) -> re.Pattern[str]:
    """A name template as a regular expression: {i} matches a layer number, a trailing * anything.

    >>> _compile("h.{i}.attn").fullmatch("h.11.attn").group("i")
    '11'
    >>> bool(_compile("multiple_choice_head.*").fullmatch("multiple_choice_head.summary.weight"))
    True
    """
    body, anything = (template[:-1], ".*") if template.endswith("*") else (template, "")
    return re.compile(r"(?P<i>\d+)".join(re.escape(part) for part in body.split("{i}")) + anything)


@dataclass(frozen=True)
class ExpectedTensor:
    """One tensor of an lmlab model: the state_dict names that share it (the first is its own) and its shape."""

    names: tuple[str, ...]
    shape: tuple[int, ...]


def expected_tensors(family: str, config: dict[str, Any]) -> list[ExpectedTensor]:
    """The tensors of an lmlab `family` model of `config`, read from the model built on the meta device.

    >>> tensors = expected_tensors("gpt", dict(vocab_size=10, context_len=8, n_layer=1, n_head=1, d_model=4))
    >>> tensors[0], len(tensors)
    (ExpectedTensor(names=('tok_emb.weight', 'lm_head.weight'), shape=(10, 4)), 16)
    """
    with torch.device("meta"):
        model = build_model(family, config)
    shared: dict[int, tuple[list[str], torch.Size]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        shared.setdefault(id(tensor), ([], tensor.shape))[0].append(name)
    return [ExpectedTensor(tuple(names), tuple(shape)) for names, shape in shared.values()]


def _hf_names_of(converter: Converter, name: str) -> tuple[str, ...]:
    names = converter.hf_names(name)
    if names is None:
        raise LmlabError(f"lmlab's {converter.family} has a tensor {name!r} that the {converter.model_type} converter "
                         f"does not name; add its module to the table in lmlab/io/hf/{converter.model_type}.py")
    return names


def _mismatch(source: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> LmlabError:
    return LmlabError(f"{source} does not match its config (missing: {missing[:3]}, unexpected: {unexpected[:3]}, "
                      f"wrong shape: {wrong[:3]}); the weights and config.json disagree")


def to_lmlab(converter: Converter, hf_tensors: Mapping[str, torch.Tensor], config: dict[str, Any],
             source: str) -> dict[str, torch.Tensor]:
    """Hugging Face tensors -> the state dict of the lmlab model of `config`, checked name by name and
    shape by shape. Tied tensors appear once, under their first name (`tok_emb.weight`, not `lm_head.weight`)."""
    parts: dict[str, dict[int, torch.Tensor]] = {}
    unknown = []
    for hf_name, tensor in hf_tensors.items():
        target = converter.lmlab_name(hf_name)
        if target is not None:
            parts.setdefault(target[0], {})[target[1]] = tensor
        elif not converter.is_ignored(hf_name):
            unknown.append(hf_name)
    if unknown:
        raise LmlabError(f"{source} holds tensors a {converter.model_type} model does not have "
                         f"({', '.join(unknown[:3])}); it is not a plain {converter.model_type} checkpoint")
    state: dict[str, torch.Tensor] = {}
    missing, wrong = [], []
    for expected in expected_tensors(converter.family, config):
        values, partial = {}, []
        for name in expected.names:
            found, hf_names = parts.pop(name, {}), _hf_names_of(converter, name)
            if len(found) == len(hf_names):
                values[name] = _joined(converter, name, found)
            elif found:  # some parts of a Fused tensor, not all
                partial += [hf_name for i, hf_name in enumerate(hf_names) if i not in found]
        if not values:
            missing += partial or [_hf_names_of(converter, expected.names[0])[0]]
            continue
        (first, value), *others = values.items()
        for name, other in others:
            if not torch.equal(value, other):
                raise LmlabError(f"{source}: {_hf_names_of(converter, name)[0]} differs from "
                                 f"{_hf_names_of(converter, first)[0]}, but lmlab's {converter.family} ties them "
                                 f"(one tensor); only checkpoints with them tied can be loaded")
        if tuple(value.shape) != expected.shape:
            wrong.append(f"{_hf_names_of(converter, first)[0]} {tuple(value.shape)} != {expected.shape}")
        state[expected.names[0]] = value
    if missing or parts or wrong:
        unexpected = [n for name in parts for n in _hf_names_of(converter, name)]
        raise _mismatch(source, missing, unexpected, wrong)
    return state


def _joined(converter: Converter, name: str, parts: dict[int, torch.Tensor]) -> torch.Tensor:
    """One lmlab tensor from its Hugging Face part(s): transposed where HF stores (in, out), concatenated."""
    pieces = [parts[i].t() if converter.is_transposed(name) else parts[i] for i in range(len(parts))]
    return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)).contiguous()


def to_hf(converter: Converter, state: Mapping[str, torch.Tensor], config: dict[str, Any]
          ) -> dict[str, torch.Tensor]:
    """An lmlab state dict of `config` -> Hugging Face tensors (on the CPU, one copy of each tied tensor).

    The tensors expected are those of the lmlab model the written config.json will read back as
    (so a reader finds exactly what it needs); the ones this model lacks and the format always has
    (`zero_when_absent`: GPT-2's biases for a model trained without them) are written as zeros.
    """
    readback = expected_tensors(converter.family, converter.config_from_hf(converter.config_to_hf(config, None)))
    own = {name for expected in expected_tensors(converter.family, config) for name in expected.names}
    dtype = next(iter(state.values())).dtype if state else torch.float32
    out: dict[str, torch.Tensor] = {}
    missing, wrong = [], []
    for expected in readback:
        present = [name for name in expected.names if name in state]
        first = expected.names[0]
        if present:
            value = state[present[0]]
            for name in present[1:]:
                if not torch.equal(value, state[name]):
                    raise LmlabError(f"{name} differs from {present[0]}, but the {converter.model_type} format ties "
                                     f"them; only models with them tied can be exported")
        elif first not in own and first.rpartition(".")[2] in converter.zero_when_absent:
            value = torch.zeros(expected.shape, dtype=dtype)  # no biases is the same network as zero biases
        else:
            missing.append(first)
            continue
        if tuple(value.shape) != expected.shape:
            wrong.append(f"{first} {tuple(value.shape)} != {expected.shape}")
            continue
        hf_names = _hf_names_of(converter, first)
        pieces = value.split(converter.split_sizes(first, value.size(0), config), dim=0)
        for hf_name, piece in zip(hf_names, pieces, strict=True):
            piece = piece.t() if converter.is_transposed(first) else piece
            out[hf_name] = piece.detach().to("cpu").contiguous()
    known = {name for expected in readback for name in expected.names}
    unexpected = [name for name in state if name not in known]
    if missing or unexpected or wrong:
        raise _mismatch("the state dict", missing, unexpected, wrong)
    return out


def read_with(converter: Converter, path: str | Path, hf_config: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a Hugging Face directory of `converter`'s model_type: (lmlab config, lmlab state dict).
    Tensors keep their stored dtype; tied tensors appear once (load with strict=False, or `build_loaded`)."""
    path = Path(path)
    config = converter.config_from_hf(hf_config if hf_config is not None else read_hf_config(path))
    return config, to_lmlab(converter, read_hf_tensors(path), config, str(path))


def hf_directory(converter: Converter, config: dict[str, Any], state: Mapping[str, torch.Tensor],
                 generation_eos: int | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json, tensors) of the Hugging Face directory of an lmlab model, checked, nothing written.
    `generation_eos`, if given, becomes the config's bos_token_id and eos_token_id."""
    hf_config = converter.config_to_hf(config, generation_eos)
    tensors = to_hf(converter, state, config)
    hf_config["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    return hf_config, tensors


def write_with(converter: Converter, config: dict[str, Any], state: Mapping[str, torch.Tensor],
               out_dir: str | Path, generation_eos: int | None = None) -> None:
    """Write an lmlab model (`config`, `state`) as a Hugging Face directory: config.json + model.safetensors."""
    write_hf_files(out_dir, *hf_directory(converter, config, state, generation_eos))


def build_loaded(family: str, config: dict[str, Any], state: Mapping[str, torch.Tensor], source: str
                 ) -> nn.Module:
    """The lmlab model of `config` holding `state` (a state dict from `to_lmlab`: tied names given once)."""
    model = build_model(family, config)
    tied = {name for expected in expected_tensors(family, config) for name in expected.names[1:]}
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise LmlabError(f"{source}: the weights do not fit a {family} model of this config "
                         f"(missing: {result.missing_keys[:3]}, unexpected: {result.unexpected_keys[:3]})")
    return model
