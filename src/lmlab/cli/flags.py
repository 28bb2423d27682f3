"""Command-line flags made from config dataclasses, so that each option, its type, its default and
its help line are written once: on the dataclass field.

A field `top_p` becomes the flag `--top-p` unless its metadata says `cli=False`; the metadata's
`help` is the flag's help, followed by the field's default. The field's type decides the flag:
int, float and str take a value (`X | None`: one that may be left out); bool and `bool | None`
are a `--x / --no-x` pair; `bool | str` reads true / false as booleans and keeps other words;
`tuple[str, ...]` is given once per item. No flag has an argparse default: an option that is not
given is absent from the parsed arguments (`given` collects the ones that are), so the library
applies its own default and the CLI can never disagree with it.

Hand-written flags (a run directory, --json) are plain argparse; `positive_int` is their converter.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Iterable, Mapping

SCALARS = (bool, int, float, str)
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
_METAVARS = {(int,): "N", (float,): "X"}


def flag(name: str) -> str:
    """The flag of option `name`.

    >>> flag("max_new_tokens")
    '--max-new-tokens'
    """
    return "--" + name.replace("_", "-")


def shown(value: Any) -> str:
    """A default as --help shows it and as the flag would take it back.

    >>> shown(True), shown(1e-3), shown("cosine")
    ('true', '0.001', 'cosine')
    """
    return str(value).lower() if isinstance(value, bool) else str(value)


def with_default(help: str, default: Any) -> str:
    """`help` followed by the default, unless there is none to show (None or an empty tuple: then
    `help` says what leaving the option out means)."""
    return help if default is None or default == () else f"{help} (default: {shown(default)})"


def positive_int(text: str) -> int:
    """argparse converter for counts: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def field_types(config_class: type) -> dict[str, Any]:
    """The fields' types, resolved (config modules write them as strings: `from __future__ import annotations`)."""
    return typing.get_type_hints(config_class)


def _members(hint: Any) -> tuple[Any, ...]:
    """The types a field may hold besides None: `int | None` -> (int,)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(member for member in typing.get_args(hint) if member is not type(None))
    return (hint,)


def _value_parser(kinds: tuple[type, ...], pass_unparsed: bool) -> Callable[[str], Any]:
    """text -> a value of the first of `kinds` it reads as (bool: true / false).

    Text that reads as none of them is an argparse error, or with `pass_unparsed` goes on as it is,
    so that the config's own check says what is wrong with it in its own words.
    """

    def parse(text: str) -> Any:
        for kind in kinds:
            if kind is str:
                return text
            if kind is bool:
                if text.lower() in ("true", "false"):
                    return text.lower() == "true"
                continue
            try:
                return kind(text)
            except ValueError:
                continue
        if pass_unparsed:
            return text
        raise argparse.ArgumentTypeError(f"must be {' or '.join(_EXPECTED[k] for k in kinds)}, got {text!r}")

    return parse


def add_flag(container: Any, name: str, hint: Any, help: str, *, pass_unparsed: bool = False) -> None:
    """Add option `name`, of type `hint`, to a parser or argument group as `flag(name)`, with `help`."""
    kinds = _members(hint)
    common = dict(dest=name, default=argparse.SUPPRESS, help=help.replace("%", "%%"))
    if set(kinds) == {bool}:
        container.add_argument(flag(name), action=argparse.BooleanOptionalAction, **common)
    elif typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,) \
            and typing.get_args(hint)[0] in SCALARS:
        item = typing.get_args(hint)[0]
        common["help"] += " (repeatable)"
        container.add_argument(flag(name), action="append", type=_value_parser((item,), pass_unparsed), **common)
    elif all(kind in SCALARS for kind in kinds):
        metavar = _METAVARS.get(kinds, name.upper())
        container.add_argument(flag(name), type=_value_parser(kinds, pass_unparsed), metavar=metavar, **common)
    else:
        raise TypeError(f"option {name!r} has type {hint}, which has no flag; give its field cli=False")


def config_options(config_class: type) -> list[str]:
    """The options of `config_class` that have flags: its fields, but those marked `cli=False`."""
    return [spec.name for spec in dataclasses.fields(config_class) if spec.metadata.get("cli", True)]


def add_config_flags(container: Any, config_class: type, *, pass_unparsed: bool = False) -> None:
    """A flag for each of `config_options(config_class)`, with its field's `help` and default.

    `pass_unparsed`: the config checks the type of every value itself (GenerationConfig,
    TrainConfig), so text that does not parse is handed to it and its message is the one shown.
    """
    hints = field_types(config_class)
    fields = {spec.name: spec for spec in dataclasses.fields(config_class)}
    for name in config_options(config_class):
        add_flag(container, name, hints[name], with_default(fields[name].metadata["help"], fields[name].default),
                 pass_unparsed=pass_unparsed)


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The options among `names` that were given on the command line, with their values."""
    values: Mapping[str, Any] = vars(args)
    return {name: values[name] for name in names if name in values}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model a command runs (the positional `run`, any source lmlab.load reads) and --device."""
    parser.add_argument("run", metavar="MODEL",
                        help="an lmlab run directory, a Hugging Face model directory, a .gguf or .arpa file, "
                             "or a registered name (see lmlab models)")
    parser.add_argument("--device", default="cpu", help="where the network runs: cpu, cuda or cuda:N (default cpu)")


def add_decoding_arguments(parser: argparse.ArgumentParser, title: str) -> Any:
    """The generation options (GenerationConfig's flags, and --greedy) in a group called `title`."""
    from lmlab.generate.config import GenerationConfig

    decoding = parser.add_argument_group("decoding", title)
    add_config_flags(decoding, GenerationConfig, pass_unparsed=True)
    decoding.add_argument("--greedy", dest="do_sample", action="store_const", const=False, default=argparse.SUPPRESS,
                          help="always take the most likely token (the same as --no-do-sample)")
    return decoding
