"""`lmlab tokenize`: how a tokenizer splits a file, token by token."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmlab.cli.output import print_json

DESCRIPTION = "Tokenize FILE. char and word tokenizers are built from FILE itself."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="text file to tokenize")
    parser.add_argument("--tokenizer", default="gpt2",
                        help="char | word | bpe | gpt2 | PATH.json | RUN_DIR (default: gpt2)")
    parser.add_argument("--json", action="store_true", help='print {"ids": [...], "tokens": N, "bytes": N}')


def run(args: argparse.Namespace) -> None:
    from lmlab.data import read_corpus
    from lmlab.errors import LmlabError
    from lmlab.tokenize import build_tokenizer

    path = Path(args.file)
    if path.is_dir():
        raise LmlabError(f"{path} is a folder; tokenize one text file at a time")
    text = read_corpus(path)
    tokenizer = build_tokenizer(args.tokenizer, text)
    ids = tokenizer.encode(text)
    n_bytes = len(text.encode("utf-8"))
    if args.json:
        print_json({"ids": ids, "tokens": len(ids), "bytes": n_bytes})
        return
    print(" ".join(f"{tokenizer.id_to_token(i)!r}:{i}" for i in ids))
    print(f"{len(ids):,} tokens, {n_bytes:,} bytes ({n_bytes / max(len(ids), 1):.2f} bytes/token)", file=sys.stderr)
