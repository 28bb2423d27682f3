"""`lmlab models`: the models lmlab knows by name, where they come from, and whether they are here."""
from __future__ import annotations

import argparse

from lmlab.cli.output import print_json

DESCRIPTION = ("List the models lmlab knows by name (give the name to any command that takes a model): "
               "family, parameters, size on disk, where it comes from, and whether it is on this machine "
               "(otherwise the first use downloads it).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='print {"models": [{"name", "family", "parameters", "bytes", "source", "present", '
                             '"path", "about"}]}')


def _size(n_bytes: int | None) -> str:
    """
    >>> _size(98_362_432), _size(None)
    ('98.4 MB', '-')
    """
    return "-" if n_bytes is None else f"{n_bytes / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> None:
    from lmlab.io.hub import NAMES

    rows = []
    for model in NAMES.values():
        path = model.packaged_file() or model.cached_file()
        rows.append({"name": model.name, "family": model.family, "parameters": model.parameters,
                     "bytes": path.stat().st_size if path else None, "source": model.where(),
                     "present": path is not None, "path": str(path) if path else None, "about": model.about})
    if args.json:
        print_json({"models": rows})
        return
    header = ("name", "family", "parameters", "size", "here", "from")
    table = [header] + [(r["name"], r["family"], f"{r['parameters'] / 1e6:.0f}M", _size(r["bytes"]),
                         "yes" if r["present"] else "no (downloads on first use)", r["source"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for r in rows:
        print(f"\n{r['name']}: {r['about']}" + (f"\n  {r['path']}" if r["path"] else ""))
