"""Model families, one per file, each only the network and its frozen config.

Every family implements the contract in DESIGN.md: `model(ids, targets)`, `model.step(ids, state)`,
`model.reorder(state, index)`, and the attribute `context_len`. `FAMILIES` maps a family name to
its class; `build_model` makes one from a config dict. Training, decoding and files live elsewhere.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from lmlab.errors import LmlabError
from lmlab.models.gpt import GPT, GPTConfig, PRESETS as GPT_PRESETS

FAMILIES: dict[str, type[nn.Module]] = {"gpt": GPT}
PRESETS: dict[str, dict[str, Any]] = {**GPT_PRESETS}
PRESET_FAMILY: dict[str, str] = {name: "gpt" for name in GPT_PRESETS}


def build_model(family: str, config: dict[str, Any]) -> nn.Module:
    """Make a freshly initialised model of `family` from a config dict."""
    if family not in FAMILIES:
        raise LmlabError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    cls = FAMILIES[family]
    return cls(cls.config_class.from_dict(config))


__all__ = ["FAMILIES", "PRESETS", "PRESET_FAMILY", "GPT", "GPTConfig", "build_model"]
