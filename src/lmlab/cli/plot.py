"""`lmlab plot KIND ...`: pictures of a model, one subcommand per kind of picture.

`PLOTS` maps each subcommand to the module that draws it and its one-line help, as
`parser.COMMANDS` does for commands: a plot module has `DESCRIPTION`, `add_arguments(parser)` and
`run(args)`, which returns the path it wrote, and imports what is heavy (torch, matplotlib) inside `run`. Adding a picture is one
such module and one row here. The drawing itself lives in lmlab/viz.
"""
from __future__ import annotations

import argparse
import importlib
from types import MappingProxyType
from typing import Mapping, NamedTuple

DESCRIPTION = "Draw a picture of a model: `lmlab plot KIND --help` shows each kind's options."


class Plot(NamedTuple):
    module: str
    help: str


PLOTS: Mapping[str, Plot] = MappingProxyType({
    "attention": Plot("lmlab.cli.plot_attention", "the attention weights of a translation or a prompt, as heatmaps"),
})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help='print {"out": the picture written}')
    kinds = parser.add_subparsers(dest="plot", metavar="KIND", required=True, parser_class=type(parser))
    for name, plot in PLOTS.items():
        module = importlib.import_module(plot.module)
        sub = kinds.add_parser(name, help=plot.help, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help='print {"out": the picture written}')
        sub.set_defaults(plot_module=module)


def run(args: argparse.Namespace) -> None:
    """Draw the picture the subcommand asks for, and say where it went."""
    from lmlab.cli.output import print_json

    path = args.plot_module.run(args)
    if args.json:
        print_json({"out": str(path)})
    else:
        print(f"wrote {path}")
