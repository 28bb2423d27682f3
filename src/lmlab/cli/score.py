"""`lmlab score`: the log-probability of sentences, token by token."""
from __future__ import annotations

import argparse
import math

from lmlab.cli.flags import add_model_arguments
from lmlab.cli.output import print_json

DESCRIPTION = ("Score each sentence given the sentence start: every token and the end-of-sentence token are "
               "predicted; prints log-probabilities (natural log).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("sentences", nargs="*", help="sentences to score")
    parser.add_argument("--file", help="score every non-empty line of this file")
    parser.add_argument("--json", action="store_true", help='print {"sentences": [{"text", "logprob", "tokens"}]}')


def run(args: argparse.Namespace) -> None:
    from lmlab.bundle import load
    from lmlab.data import read_corpus
    from lmlab.errors import LmlabError
    from lmlab.evaluate.score import score_sentence

    sentences = list(args.sentences)
    if args.file:
        sentences += [line for line in read_corpus(args.file).splitlines() if line.strip()]
    if not sentences:
        raise LmlabError("give sentences to score, or --file FILE")
    bundle = load(args.run, device=args.device)
    scores = [score_sentence(bundle.model, bundle.tokenizer, text) for text in sentences]
    if args.json:
        print_json({"sentences": [{"text": s.text, "logprob": s.logprob, "tokens": len(s.tokens),
                                   "token_logprobs": s.tokens} for s in scores]})
        return
    for s in scores:
        print(f"{s.logprob:10.3f}  (perplexity {s.perplexity:.2f})  {s.text}")
        print("            " + "  ".join(f"{token!r} {lp:.2f}" for token, lp in s.tokens))
    if len(scores) >= 2:
        ratio = math.exp(scores[0].logprob - scores[1].logprob)
        print(f"P(first) / P(second) = {ratio:.4g}")
