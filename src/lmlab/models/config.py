"""Strict construction of frozen config dataclasses from plain dicts (JSON, CLI overrides).

Each model family keeps its own config dataclass next to its network; this module only holds the
shared `from_dict` behaviour: unknown keys are rejected with a message that names them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from lmlab.errors import LmlabError

C = TypeVar("C")


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build dataclass `cls` from `data`, rejecting keys it does not have.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Small:
    ...     width: int = 2
    >>> config_from_dict(Small, {"width": 3})
    Small(width=3)
    >>> config_from_dict(Small, {"wdith": 3})
    Traceback (most recent call last):
    ...
    lmlab.errors.LmlabError: unknown Small option(s): wdith; known: width
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LmlabError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**data)
