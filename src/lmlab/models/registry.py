"""The model families as data: each family's kind, how it trains, its presets, and where its network is.

The trainer, the evaluator, the bundle and the CLI ask this table what a family is and does; they
never test a family's name or probe a model with `hasattr`. A new family is one file under
lmlab/models holding its network and config, plus one `Family` entry below; the contract tests
(tests/test_contract.py) then run on it, and fail until it has a tiny configuration there.

Kinds (DESIGN.md "Kinds of model"):
- causal: predicts the next token from the ones before (gpt, llama, rnn/lstm/gru, nplm);
- counted: the same contract, estimated by counting instead of gradients (ngram);
- conditional: predicts target tokens given a source it encodes first (seq2seq, transformer);
- encoder: masked-LM scoring and embeddings, no generation (bert);
- embedding: word vectors (word2vec, glove).

How a family trains (`trains_on`), which is also how the evaluator reads text:
- windows: random windows of `context_len` tokens, scored as non-overlapping windows;
- streams: consecutive batches that carry the model's state (truncated BPTT), scored in order;
- counts: one counting pass over the token stream, scored a whole stream at once;
- pairs: source/target pairs; masks: masked tokens; contexts: skip-gram / CBOW windows.

This module imports no torch, so `lmlab --help` and the CLI's flag tables stay fast; a family's
network class is imported only when `Family.network` is called.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from lmlab.errors import LmlabError


@dataclass(frozen=True)
class Kind:
    name: str
    generates: bool  # has step() / reorder() and decodes with lmlab.generate
    needs_source: bool = False  # encode(src) comes first (conditional models)


KINDS: Mapping[str, Kind] = MappingProxyType({
    "causal": Kind("causal", generates=True),
    "counted": Kind("counted", generates=True),
    "conditional": Kind("conditional", generates=True, needs_source=True),
    "encoder": Kind("encoder", generates=False),
    "embedding": Kind("embedding", generates=False),
})
TRAINING_DATA = ("windows", "streams", "counts", "pairs", "masks", "contexts")


@dataclass(frozen=True)
class Family:
    """One model family: what it is (`kind`), what it trains on, where its network lives
    ("module:Class"), its size presets, and the config values it fixes or takes from the tokenizer."""

    name: str
    kind: str
    trains_on: str
    network_path: str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_preset: str | None = None  # the sizes a run gets when it names no preset
    fixed: Mapping[str, Any] = field(default_factory=dict)  # config values the family sets (lstm: cell="lstm")
    from_tokenizer: Mapping[str, str] = field(default_factory=dict)  # config field -> special token whose id fills it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"family {self.name}: unknown kind {self.kind!r}")
        if self.trains_on not in TRAINING_DATA:
            raise ValueError(f"family {self.name}: unknown training data {self.trains_on!r}")
        if self.default_preset is not None and self.default_preset not in self.presets:
            raise ValueError(f"family {self.name}: default preset {self.default_preset!r} is not one of its presets")

    @property
    def generates(self) -> bool:
        return KINDS[self.kind].generates

    def network(self) -> type:
        """The network class (imports its module, and so torch)."""
        module, _, name = self.network_path.partition(":")
        return getattr(importlib.import_module(module), name)

    def config_class(self) -> type:
        return self.network().config_class


# Zaremba et al. 2014's small / medium / large PTB networks; the rnn, lstm and gru families share them.
_RECURRENT_PRESETS = {
    "small": dict(d_embed=200, hidden=200, layers=2, dropout=0.0, init_scale=0.1),
    "medium": dict(d_embed=650, hidden=650, layers=2, dropout=0.5, init_scale=0.05),
    "large": dict(d_embed=1500, hidden=1500, layers=2, dropout=0.65, init_scale=0.04),
}


def _recurrent(cell: str, sizes: tuple[str, ...]) -> Family:
    return Family(cell, kind="causal", trains_on="streams", network_path="lmlab.models.rnn:RNNLM",
                  presets={f"{cell}-{size}": _RECURRENT_PRESETS[size] for size in sizes}, fixed={"cell": cell})


FAMILIES: Mapping[str, Family] = MappingProxyType({family.name: family for family in (
    Family("gpt", kind="causal", trains_on="windows", network_path="lmlab.models.gpt:GPT",
           presets={
               "gpt-micro": dict(n_layer=4, n_head=4, d_model=128, context_len=64),
               "gpt-mini": dict(n_layer=6, n_head=6, d_model=192, context_len=256),
               "gpt-small": dict(n_layer=6, n_head=6, d_model=384, context_len=256),
               "gpt2": dict(n_layer=12, n_head=12, d_model=768, context_len=1024, activation="gelu_tanh"),
           },
           default_preset="gpt-micro"),
    Family("llama", kind="causal", trains_on="windows", network_path="lmlab.models.llama:Llama",
           presets={
               "llama-micro": dict(n_layer=4, n_head=4, n_kv_head=2, d_model=128, context_len=256),
               "llama-small": dict(n_layer=8, n_head=8, n_kv_head=4, d_model=384, context_len=512),
               "smollm2-135m": dict(n_layer=30, n_head=9, n_kv_head=3, d_model=576, d_hidden=1536,
                                    context_len=8192, rope_theta=100000.0, tie_embeddings=True),
           },
           default_preset="llama-micro"),
    Family("nplm", kind="causal", trains_on="streams", network_path="lmlab.models.nplm:NPLM",
           presets={
               "nplm-bengio": dict(order=5, d_embed=30, hidden=100, direct=True),  # the paper's Brown-corpus nets
               "nplm-small": dict(order=5, d_embed=100, hidden=200),
           }),
    _recurrent("rnn", ("small",)),
    _recurrent("lstm", ("small", "medium", "large")),
    _recurrent("gru", ("small",)),
    Family("seq2seq", kind="conditional", trains_on="pairs", network_path="lmlab.models.seq2seq:Seq2Seq",
           presets={
               "seq2seq-small": dict(d_embed=256, hidden=256, layers=1),
               "seq2seq-medium": dict(d_embed=256, hidden=512, layers=2, bidirectional=True, dropout=0.3),
           },
           default_preset="seq2seq-small"),
    Family("transformer", kind="conditional", trains_on="pairs", network_path="lmlab.models.transformer:Transformer",
           presets={
               "transformer-small": dict(n_layer=3, n_head=4, d_model=256, d_hidden=1024),
               "transformer-base": dict(n_layer=6, n_head=8, d_model=512, d_hidden=2048),  # the paper's base
           },
           default_preset="transformer-small"),
    Family("ngram", kind="counted", trains_on="counts", network_path="lmlab.models.ngram:NGramLM",
           from_tokenizer={"eos_id": "<eos>"}),  # a line end (<eos>) is the sentence end </s>
)})

DEFAULT_FAMILY = "gpt"  # what a run trains when it names no family

PRESETS: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType({
    preset: (family.name, options) for family in FAMILIES.values() for preset, options in family.presets.items()})


def family(name: str) -> Family:
    """The registered family `name`, or an error that lists them."""
    if name not in FAMILIES:
        raise LmlabError(f"unknown model family {name!r}; choose one of: {', '.join(FAMILIES)}", params=("model",))
    return FAMILIES[name]


def family_of(model: Any) -> Family:
    """The family of a built model (every network names its own in `model.family`)."""
    return family(model.family)


def families_of_kind(*kinds: str) -> list[str]:
    """The names of the families of these kinds, in registry order.

    >>> families_of_kind("counted")
    ['ngram']
    """
    return [name for name, entry in FAMILIES.items() if entry.kind in kinds]


def preset_options(family_name: str, preset: str | None) -> dict[str, Any]:
    """The model options a run of `family_name` starts from: `preset`'s, else the family's default preset's.

    >>> preset_options("gpt", None)["d_model"], preset_options("lstm", "lstm-medium")["hidden"]
    (128, 650)
    """
    entry = family(family_name)
    if preset is None:
        preset = entry.default_preset
        if preset is None:
            return {}
    if preset not in PRESETS:
        raise LmlabError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}", params=("preset",))
    owner, options = PRESETS[preset]
    if owner != family_name:
        raise LmlabError(f"preset {preset!r} is for model {owner}, not {family_name}", params=("model",))
    return dict(options)
