"""`lmlab eval`: loss, perplexity and bits per byte of a model on text."""
from __future__ import annotations

import argparse
from pathlib import Path

from lmlab.cli.flags import add_model_arguments, positive_int
from lmlab.cli.output import print_json

DESCRIPTION = "Evaluate a run on --data, or on its own validation split by default."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    from lmlab.models import FAMILIES

    in_order = " / ".join(name for name, entry in FAMILIES.items() if entry.trains_on == "streams")
    parser.add_argument("--data", help="text file or folder to evaluate on (default: the run's validation split)")
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"windows per batch (default 16); {in_order} read the text in order, carrying their "
                             "state, as this many rows (default 1: each token sees all text before it)")
    parser.add_argument("--json", action="store_true",
                        help='print {"loss", "perplexity", "bits_per_byte", "tokens", "bytes"}')


def run(args: argparse.Namespace) -> None:
    from lmlab.bundle import load
    from lmlab.data import read_corpus
    from lmlab.errors import LmlabError
    from lmlab.evaluate import perplexity
    from lmlab.train.run import validation_split

    bundle = load(args.run, device=args.device)
    if args.data:
        result = perplexity(bundle.model, bundle.tokenizer, read_corpus(args.data), batch_size=args.batch_size)
    elif "data" not in bundle.config:
        raise LmlabError(f"{args.run} is not an lmlab run directory, so it has no validation split: pass --data FILE")
    else:
        stream, n_bytes = validation_split(Path(args.run), bundle.config, bundle.tokenizer)
        result = perplexity(bundle.model, bundle.tokenizer, stream=stream, text_bytes=n_bytes,
                            batch_size=args.batch_size)
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"loss {result.loss:.4f}  perplexity {result.perplexity:.3f}  bits/byte {result.bits_per_byte:.4f}  "
              f"({result.tokens:,} tokens, {result.bytes:,} bytes)")
