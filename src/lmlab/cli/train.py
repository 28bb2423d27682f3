"""`lmlab train`: train a model into a run directory, or continue one with --resume.

The training flags are `TrainConfig`'s fields (lmlab/train/trainer.py) and the model flags the
options of every registered family's config (lmlab.train.run.model_defaults), each flag's help
naming the families that have it and their defaults. The command passes on only the options it
was given; `lmlab.train.train` applies the defaults, and on --resume compares the given settings
with the run's own.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from lmlab.cli.flags import add_config_flags, add_flag, config_options, field_types, given, positive_int, shown
from lmlab.cli.output import print_json
from lmlab.models import FAMILIES
from lmlab.tokenize import TOKENIZERS, TRAIN_OPTIONS
from lmlab.train.run import DEFAULT_MODEL, DEFAULT_TOKENIZER, DEFAULT_VAL_FRACTION, model_defaults
from lmlab.train.trainer import TrainConfig

DESCRIPTION = (f"Train a model on a text file or folder (default: Tiny Shakespeare, shipped with lmlab) into --out. "
               f"The last {DEFAULT_VAL_FRACTION:.0%} is validation unless --val-data is given. The same command "
               "with --resume added continues the run; only --max-steps or --epochs may change.")

# What the model options do, until the model configs carry `help` metadata of their own (which wins).
MODEL_HELP = {
    "context_len": "context length in tokens",
    "n_layer": "transformer blocks",
    "n_head": "attention heads",
    "d_model": "embedding width",
    "dropout": "dropout probability",
    "bias": "biases in the linear layers and norms",
    "positional": "positional encoding: learned | sinusoidal",
    "activation": "feed-forward activation: gelu | gelu_tanh",
    "norm_eps": "the epsilon of the layer norms",
    "attention": "gpt, llama, transformer: the attention kernel, sdpa (fused) | manual (written out); seq2seq: the "
                 "attention score, none (the encoder's final state is the only context) | dot | general | additive | "
                 "scaled-dot",
    "cell": "the recurrent cell: gru | lstm",
    "bidirectional": "the encoder reads the source in both directions",
    "teacher_forcing": "share of training steps that feed the decoder the true previous token (else its own guess)",
    "max_source_len": "longest source sentence, in tokens",
    "n_decoder_layer": "decoder blocks (default: n_layer)",
    "norm_first": "layer norm before each sublayer (pre-LN); --no-norm-first: after each residual sum, as in the paper",
    "order": "n: the model sees the n-1 previous tokens",
    "n_kv_head": "key/value heads, each shared by n_head / n_kv_head query heads (grouped-query attention)",
    "d_hidden": "the feed-forward's width (SwiGLU's; default 8/3 d_model rounded up to a multiple of 64)",
    "head_dim": "width of each attention head (default d_model / n_head)",
    "rope_theta": "the base of the rotary position frequencies",
    "attention_bias": "biases on the attention's q, k, v and output projections",
    "mlp_bias": "biases in the feed-forward",
    "init_std": "weights start normal with this standard deviation",
    "d_embed": "word embedding width",
    "hidden": "hidden units (per layer)",
    "direct": "direct connections from the embeddings to the output",
    "layers": "stacked recurrent layers",
    "tie_embeddings": "the softmax layer reuses the embeddings (needs d_embed = hidden)",
    "init_scale": "every weight starts uniform in [-init_scale, init_scale]",
    "smoothing": "mle | add-k | witten-bell | kn | mkn",
    "k": "the pseudo-count of add-k smoothing (1 = Laplace)",
}

# The tokenizer options that have flags (names as lmlab.tokenize.TRAIN_OPTIONS has them).
TOKENIZER_OPTIONS = ("vocab_size", "split_punctuation", "lowercase", "min_freq", "eos_per_line")
# The parallel-data options (lmlab.train.pairs: their names there).
PAIR_FLAGS = ("source", "target", "val_source", "val_target", "max_len", "vocab")


@dataclasses.dataclass(frozen=True)
class ModelOption:
    type: Any
    help: str
    defaults: dict[str, Any]  # family -> what a new run of it gets


def model_options() -> dict[str, ModelOption]:
    """Every model option of the registered families, in registry and field order."""
    options: dict[str, ModelOption] = {}
    for name, entry in FAMILIES.items():
        config_class = entry.config_class()
        types = field_types(config_class)
        helps = {spec.name: spec.metadata.get("help") for spec in dataclasses.fields(config_class)}
        for option, default in model_defaults(name).items():
            if option not in options:
                options[option] = ModelOption(types[option], helps[option] or MODEL_HELP.get(option, ""), {})
            elif options[option].type != types[option]:
                raise TypeError(f"model option {option!r} is {options[option].type} in one family and "
                                f"{types[option]} in {name}; one flag cannot take both")
            options[option].defaults[name] = default
    return options


def by_default(defaults: dict[str, Any]) -> str:
    """Families grouped by their default: "nplm: 60; rnn, lstm, gru: 200"."""
    groups: dict[str, list[str]] = {}
    for family, value in defaults.items():
        groups.setdefault(shown(value), []).append(family)
    return "; ".join(f"{', '.join(families)}: {value}" for value, families in groups.items())


def _word_split(text: str) -> bool:
    choices = {"punctuation": True, "space": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"must be punctuation or space, got {text!r}")
    return choices[text]


def _for_tokenizers(option: str) -> str:
    """'--tokenizer word / bpe', the tokenizers that take `option`."""
    return "--tokenizer " + " / ".join(kind for kind, taken in TRAIN_OPTIONS.items() if option in taken)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=argparse.SUPPRESS,
                      help="training text: a file or a folder of .txt files (default: Tiny Shakespeare)")
    data.add_argument("--val-data", default=argparse.SUPPRESS,
                      help=f"validation text (default: the last {DEFAULT_VAL_FRACTION * 100:g}%% of --data)")
    data.add_argument("--out", required=True, help="run directory to create (or continue, with --resume)")

    pairs = parser.add_argument_group(
        "parallel data", "for the translation families (seq2seq, transformer): two aligned files, or --data / "
                         "--val-data as TSV files of source<TAB>target lines")
    pairs.add_argument("--src-data", dest="source", default=argparse.SUPPRESS, metavar="FILE",
                       help="training sources, one sentence a line")
    pairs.add_argument("--tgt-data", dest="target", default=argparse.SUPPRESS, metavar="FILE",
                       help="their translations, line by line")
    pairs.add_argument("--val-src", dest="val_source", default=argparse.SUPPRESS, metavar="FILE",
                       help="validation sources (default: 1,000 training pairs held out)")
    pairs.add_argument("--val-tgt", dest="val_target", default=argparse.SUPPRESS, metavar="FILE",
                       help="validation targets")
    pairs.add_argument("--max-len", dest="max_len", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                       help="leave out pairs with a side longer than N tokens (saying how many); without it such "
                            "pairs are an error")
    pairs.add_argument("--vocab", choices=("joint", "separate"), default=argparse.SUPPRESS,
                       help="one tokenizer for both languages (default; the Transformer ties its embeddings) or "
                            "one per side")

    tokenizer = parser.add_argument_group("tokenizer")
    tokenizer.add_argument("--tokenizer", default=argparse.SUPPRESS,
                           help=f"{' | '.join(TOKENIZERS)} | PATH.json of a saved tokenizer "
                                f"(default: {DEFAULT_TOKENIZER})")
    tokenizer.add_argument("--vocab-size", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                           help=f"{_for_tokenizers('vocab_size')}: vocabulary size (word: the most frequent words, "
                                "<unk> for the rest)")
    tokenizer.add_argument("--word-split", dest="split_punctuation", type=_word_split, default=argparse.SUPPRESS,
                           metavar="{punctuation,space}",
                           help=f"{_for_tokenizers('split_punctuation')}: how text is cut into words. punctuation "
                                "(default): punctuation is split off raw text, but contractions, clitics (n't, 's) "
                                "and abbreviations (Mr., U.S.) stay whole, so PTB gives its own tokens; space: every "
                                "whitespace-separated string is one token, exactly as written - the choice for "
                                "text that is already tokenized and must keep its tokens whatever they contain, or "
                                "for figures that must count whitespace tokens like published ones")
    tokenizer.add_argument("--lowercase", action="store_const", const=True, default=argparse.SUPPRESS,
                           help=f"{_for_tokenizers('lowercase')}: lowercase the text")
    tokenizer.add_argument("--min-freq", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                           help=f"{_for_tokenizers('min_freq')}: drop words seen fewer times (-> <unk>)")
    tokenizer.add_argument("--no-eos-per-line", dest="eos_per_line", action="store_const", const=False,
                           default=argparse.SUPPRESS,
                           help=f"{_for_tokenizers('eos_per_line')}: line ends are plain whitespace, not <eos> tokens")

    model = parser.add_argument_group(
        "model", "Each model option names the families that have it, with the value a new run of each gets "
                 "(its default preset's, else its config's).")
    model.add_argument("--model", choices=list(FAMILIES), default=argparse.SUPPRESS,
                       help=f"model family (default: {DEFAULT_MODEL})")
    presets = "; ".join(f"{', '.join(entry.presets)} ({name}"
                        + (f", default {entry.default_preset})" if entry.default_preset else ")")
                        for name, entry in FAMILIES.items() if entry.presets)
    model.add_argument("--preset", default=argparse.SUPPRESS, help=f"model size preset: {presets}")
    for option, spec in model_options().items():
        add_flag(model, option, spec.type, f"{spec.help} ({by_default(spec.defaults)})")

    add_config_flags(parser.add_argument_group("training"), TrainConfig, pass_unparsed=True)

    run = parser.add_argument_group("run")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint; other flags may be given again "
                          "with the run's own values")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--device", default="cpu", help="where the network trains: cpu, cuda or cuda:N (default cpu)")
    run.add_argument("--json", action="store_true", help="print one JSON object with the results at the end")


def run(args: argparse.Namespace) -> None:
    from lmlab.train import train

    settings = given(args, ("data", "model", "tokenizer", "preset", "val_data"))
    result = train(**settings, out=args.out, model_overrides=given(args, model_options()),
                   train_overrides=given(args, config_options(TrainConfig)),
                   tokenizer_options=given(args, TOKENIZER_OPTIONS), resume=args.resume, progress=not args.quiet,
                   device=args.device, pair_data=given(args, PAIR_FLAGS))
    if args.json:
        print_json({"train_loss": result.train_loss, "val_loss": result.val_loss, "steps": result.steps,
                    "tokens_per_s": round(result.tokens_per_s, 1), "wall_s": round(result.wall_s, 2),
                    "out": result.out})
        return
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(f"trained {result.parameters:,} parameters for {result.steps} steps in {result.wall_s:.1f} s "
          f"({result.tokens_per_s:,.0f} tokens/s): train loss {result.train_loss:.4f}, val loss {val}")
    from lmlab.models import family
    from lmlab.io.checkpoint import read_run_config

    if family(read_run_config(result.out)["model"]["family"]).trains_on == "pairs":
        print(f"run directory: {result.out}   next: lmlab translate {result.out} \"...\"")
    else:
        print(f"run directory: {result.out}   next: lmlab generate {result.out} --prompt \"...\"")
