"""`lmlab compare`: several runs scored on the same text, in one table (and .md, .json, .png files)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from lmlab.cli.output import print_json

DESCRIPTION = ("Score every run on --data and print family, parameters, training time, perplexity per token, "
               "bits per byte (the fair scale across tokenizers) and tokens/s; also writes PREFIX.md, PREFIX.json "
               "and a PREFIX.png bar chart.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--data", required=True, help="text file or folder to score on")
    parser.add_argument("--out", default="comparison", help="file prefix for .md/.json/.png (default: comparison)")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON object")


def run(args: argparse.Namespace) -> None:
    from lmlab.compare import compare_runs, markdown_table, write_comparison
    from lmlab.data import read_corpus

    rows = compare_runs(args.runs, read_corpus(args.data))
    paths = write_comparison(rows, args.out)
    if args.json:
        print_json({"rows": [asdict(r) for r in rows], "files": [str(p) for p in paths]})
    else:
        print(markdown_table(rows), end="")
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
