"""Model families, one per file, each only the network and its frozen config.

Every family implements the contract in DESIGN.md: `model(ids, targets)`, `model.step(ids, state)`,
`model.reorder(state, index)`, and the attribute `context_len`. `FAMILIES` maps a family name to
its class; `build_model` makes one from a config dict. Training, decoding and files live elsewhere.

The n-gram family (`ngram`) is counted, not trained by gradients: `NGramLM.fit(token_ids)` builds
its tables and `token_log_probs(ids)` scores a whole stream. A family with `recurrent = True` (nplm, rnn, lstm, gru) also has
`logits, loss, state = model.forward_with_state(ids, targets, state)`, which continues from the
state a previous window ended in; its state is a tuple of tensors. The trainer feeds such a model
consecutive batches and carries the state across them; evaluation scores text in order the same way.
One class may serve several families: `FAMILY_OPTIONS` holds the config values a family fixes
(the rnn, lstm and gru families are `RNNLM` with that cell).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.gpt import GPT, GPTConfig, PRESETS as GPT_PRESETS
from lmlab.models.ngram import NGramConfig, NGramLM
from lmlab.models.nplm import NPLM, NPLMConfig, PRESETS as NPLM_PRESETS
from lmlab.models.rnn import CELLS, RNNLM, RNNConfig, PRESETS as RNN_PRESETS, PRESET_FAMILY as RNN_PRESET_FAMILY

FAMILIES: dict[str, type[nn.Module]] = {"ngram": NGramLM, "gpt": GPT, "nplm": NPLM, **{cell: RNNLM for cell in CELLS}}
FAMILY_OPTIONS: dict[str, dict[str, Any]] = {cell: {"cell": cell} for cell in CELLS}
PRESETS: dict[str, dict[str, Any]] = {**GPT_PRESETS, **NPLM_PRESETS, **RNN_PRESETS}
PRESET_FAMILY: dict[str, str] = {**{name: "gpt" for name in GPT_PRESETS}, **{name: "nplm" for name in NPLM_PRESETS},
                                 **RNN_PRESET_FAMILY}


def is_counted(model: nn.Module) -> bool:
    """Whether `model` is count-based (n-gram): estimated in one pass, scored a whole stream at a
    time, its tables probabilities rather than weights."""
    return hasattr(model, "token_log_probs")


def build_model(family: str, config: dict[str, Any]) -> nn.Module:
    """Make a freshly initialised model of `family` from a config dict."""
    if family not in FAMILIES:
        raise LmlabError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    cls = FAMILIES[family]
    fixed = FAMILY_OPTIONS.get(family, {})
    for key, value in fixed.items():
        if key in config and config[key] != value:
            raise LmlabError(f"model family {family!r} has {key}={value!r}, got {key}={config[key]!r}; "
                             f"choose the family {config[key]!r} instead")
    return cls(cls.config_class.from_dict({**config, **fixed}))


__all__ = ["FAMILIES", "FAMILY_OPTIONS", "PRESETS", "PRESET_FAMILY", "GPT", "GPTConfig", "NGramConfig", "NGramLM",
           "NPLM", "NPLMConfig",
           "RNNLM", "RNNConfig", "build_model", "is_counted"]
