"""Model families, one per file, each only the network and its frozen config.

Every family implements the contract in DESIGN.md: `model(ids, targets)`, `model.step(ids, state,
mask)`, `model.reorder(state, index)`, and the attributes `family` and `context_len`. What each
family is (its kind, what it trains on, its presets) is data in registry.py; `build_model` makes a
freshly initialised network from a family name and a config dict.

Beyond the contract: a family that trains on streams (nplm, rnn, lstm, gru) also has
`logits, loss, state = model.forward_with_state(ids, targets, state)`, which continues from the
state a previous window ended in (its state is a tuple of tensors); a counted family (ngram) has
`fit(token_ids)`, which builds its tables, and `token_log_probs(ids)`, which scores a whole stream.
Training, decoding and files live elsewhere.
"""
from __future__ import annotations

from itertools import chain
from typing import Any

import torch
import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.registry import DEFAULT_FAMILY, FAMILIES, KINDS, PRESETS, Family, families_of_kind, family, family_of, preset_options


def build_model(family_name: str, config: dict[str, Any]) -> nn.Module:
    """Make a freshly initialised model of `family_name` from a config dict (the family's fixed
    values filled in; a conflicting one is an error)."""
    entry = family(family_name)
    for key, value in entry.fixed.items():
        if key in config and config[key] != value:
            raise LmlabError(f"model family {family_name!r} has {key}={value!r}, got {key}={config[key]!r}; "
                             f"choose the family {config[key]!r} instead")
    network = entry.network()
    return network(network.config_class.from_dict({**config, **entry.fixed}))


def device_of(model: nn.Module) -> torch.device:
    """Where a model's tensors live: its first parameter's or buffer's device (the CPU for a model
    with neither). Everything made for the model — batches, masks, caches — is made there."""
    for tensor in chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "KINDS", "PRESETS", "Family", "build_model", "device_of", "families_of_kind", "family", "family_of",
           "preset_options"]
