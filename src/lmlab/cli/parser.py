"""The table of commands and the parsers built from it.

`COMMANDS` maps each command to the module that implements it and its one-line help. `lmlab
--help` lists the table without importing any command; `lmlab NAME ...` imports only NAME's module
and builds only its parser. A command module has `DESCRIPTION` (its --help text), `add_arguments
(parser)` and `run(args)`; it imports what building its parser needs at the top and the rest
inside `run`.
"""
from __future__ import annotations

import argparse
import importlib
from types import MappingProxyType, ModuleType
from typing import Mapping, NamedTuple, NoReturn, Sequence

from lmlab.cli.errors import EXIT_USAGE


class Command(NamedTuple):
    module: str
    help: str


COMMANDS: Mapping[str, Command] = MappingProxyType({
    "train": Command("lmlab.cli.train", "train a language model into a run directory"),
    "generate": Command("lmlab.cli.generate", "generate text from a trained model"),
    "eval": Command("lmlab.cli.eval", "loss, perplexity and bits per byte of a model on text"),
    "score": Command("lmlab.cli.score", "log-probability of sentences, token by token"),
    "compare": Command("lmlab.cli.compare", "evaluate several runs on the same text, in one table"),
    "tokenize": Command("lmlab.cli.tokenize", "show how a tokenizer splits a file"),
    "export": Command("lmlab.cli.export", "write a run as a Hugging Face directory or an ARPA file"),
    "chat": Command("lmlab.cli.chat", "talk with a model in the terminal, in its own chat format"),
    "models": Command("lmlab.cli.models", "the models lmlab knows by name, and whether they are here"),
    "plot": Command("lmlab.cli.plot", "draw a model: attention heatmaps (lmlab plot KIND --help)"),
})


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: ...` and where to look, then exit code 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> Parser:
    """The top-level parser: every command with its one-line help (their options are not built)."""
    from lmlab import __version__

    parser = Parser(prog="lmlab", description="Language models from n-grams to transformers.",
                    epilog="`lmlab COMMAND --help` shows a command's options.")
    parser.add_argument("--version", action="version", version=f"lmlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def command_parser(name: str) -> tuple[Parser, ModuleType]:
    """The full parser of command `name`, and the module that runs it."""
    module = importlib.import_module(COMMANDS[name].module)
    parser = Parser(prog=f"lmlab {name}", description=module.DESCRIPTION)
    module.add_arguments(parser)
    return parser, module


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Parser, ModuleType]:
    """Parse `lmlab ARGV`: (the arguments, the command's parser, its module). --help, --version and
    bad input print and exit here, as argparse does."""
    if argv and argv[0] in COMMANDS:
        parser, module = command_parser(argv[0])
        return parser.parse_args(argv[1:]), parser, module
    top = build_parser()
    top.parse_args(argv)  # no command, or not one of ours: argparse explains and exits
    top.error("give a command")
