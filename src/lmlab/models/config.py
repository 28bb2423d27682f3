"""Strict construction of frozen config dataclasses from plain dicts (JSON, CLI overrides).

Each model family keeps its own config dataclass next to its network; this module only holds the
shared behaviour (`ModelConfig`): `from_dict` rejects unknown keys with a message that names
them, `to_dict` gives the plain dict a run's config.json stores.
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


class ModelConfig:
    """Mixed into a family's frozen config dataclass: strict `from_dict` and plain `to_dict`."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]
