"""`lmlab plot attention RUN "sentence" --out a.png`: the attention of a model as heatmaps.

For a translation run, the source x target alignment of the sentence's translation (for the
Transformer every layer and head of cross-attention, and self-attention with --kind self, as a
grid; --layer and --head pick one); for a language model, the self-attention of the prompt. The
drawing is lmlab/viz/attention.py; the weights come from lmlab/translate.py.
"""
from __future__ import annotations

import argparse

from lmlab.cli.flags import add_model_arguments

DESCRIPTION = ("Draw the attention weights of a model on a sentence: for a translation run the source x target "
               "alignment of its (greedy) translation, for a language model the self-attention of the text.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("text", metavar="SENTENCE", help="the source sentence (translation) or the prompt (LM)")
    parser.add_argument("--out", required=True, help="the picture to write: .png or .svg")
    parser.add_argument("--kind", choices=("cross", "self", "encoder"), default="cross",
                        help="translation runs: cross (target x source, default), self (the decoder's masked "
                             "self-attention) or encoder (the encoder's self-attention)")
    parser.add_argument("--layer", type=int, help="draw only this layer (from 0; default: every layer)")
    parser.add_argument("--head", type=int, help="draw only this head (from 0; default: every head)")
    parser.add_argument("--max-new-tokens", type=int, default=60, help="longest translation drawn (default 60)")


def run(args: argparse.Namespace) -> str:
    from lmlab.bundle import load
    from lmlab.translate import attention_maps
    from lmlab.viz.attention import plot_attention

    bundle = load(args.run, device=args.device)
    maps = attention_maps(bundle, args.text, kind=args.kind, max_new_tokens=args.max_new_tokens)
    return plot_attention(maps, args.out, layer=args.layer, head=args.head)
