"""The `lmlab` command: parse arguments, call the library, format the answer.

Every subcommand has `--help` and a `--json` mode that prints one JSON object. Bad input prints a
one-line `error: ...` that says what to do and exits with code 2. No logic lives here beyond that.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from lmlab.errors import LmlabError
from lmlab.runtime import keep_freed_memory

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: ...` and where to look, then exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False))


# --- train -------------------------------------------------------------------------------------

def add_train(sub: argparse._SubParsersAction) -> None:
    from lmlab.models import FAMILIES, PRESETS
    from lmlab.tokenize import TOKENIZERS

    p = sub.add_parser("train", help="train a language model into a run directory",
                       description="Train a model on a text file or folder (default: Tiny Shakespeare, "
                                   "shipped with lmlab) into --out. The last 10%% is validation unless "
                                   "--val-data is given.")
    p.add_argument("--model", choices=list(FAMILIES), help="model family (default: gpt)")
    p.add_argument("--data", help="training text: a file or a folder of .txt files (default: Tiny Shakespeare)")
    p.add_argument("--val-data", help="validation text (default: the last 10%% of --data)")
    p.add_argument("--tokenizer",
                   help=f"{' | '.join(TOKENIZERS)} | PATH.json of a saved tokenizer (default: char)")
    p.add_argument("--vocab-size", type=_positive_int,
                   help="vocabulary size for --tokenizer bpe / word (word: the most frequent words, "
                        "<unk> for the rest)")
    p.add_argument("--word-split", choices=["punctuation", "space"],
                   help="--tokenizer word: split punctuation off words (default) or split at whitespace "
                        "only (for already tokenized text such as PTB)")
    p.add_argument("--lowercase", action="store_const", const=True, help="--tokenizer word: lowercase the text")
    p.add_argument("--min-freq", type=_positive_int, help="--tokenizer word: drop words seen fewer times (-> <unk>)")
    p.add_argument("--no-eos-per-line", action="store_const", const=False, dest="eos_per_line",
                   help="--tokenizer word: line ends are plain whitespace, not <eos> tokens")
    p.add_argument("--out", required=True, help="run directory to create (or continue, with --resume)")
    p.add_argument("--preset", help=f"model size preset: {', '.join(PRESETS)}")
    for flag, kind, text in (
        ("--n-layer", _positive_int, "transformer blocks"), ("--n-head", _positive_int, "attention heads"),
        ("--d-model", _positive_int, "embedding width"), ("--context-len", _positive_int, "context length in tokens"),
        ("--dropout", float, "dropout probability"),
        ("--positional", str, "positional encoding: learned | sinusoidal"),
        ("--d-embed", _positive_int, "nplm / rnn / lstm / gru: word embedding width"),
        ("--hidden", _positive_int, "nplm / rnn / lstm / gru: hidden units (per layer)"),
        ("--layers", _positive_int, "rnn / lstm / gru: stacked recurrent layers"),
        ("--order", _positive_int, "ngram / nplm: n, the model sees the n-1 previous tokens"),
        ("--smoothing", str, "ngram: mle | add-k | witten-bell | kn | mkn (default mkn)"),
        ("--k", float, "ngram add-k: the pseudo-count (1 = Laplace)"),
    ):
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--tie-embeddings", action="store_const", const=True,
                   help="rnn / lstm / gru: the softmax layer reuses the embeddings (needs --d-embed = --hidden)")
    p.add_argument("--direct", action="store_const", const=True,
                   help="nplm: direct connections from the embeddings to the output")
    for flag, kind, text in (
        ("--batch-size", _positive_int, "sequences per step (default 12)"),
        ("--grad-accum", _positive_int, "micro-batches per optimizer step (default 1)"),
        ("--lr", float, "peak learning rate (default 1e-3)"),
        ("--min-lr", float, "final learning rate (default lr/10)"),
        ("--warmup-steps", int, "linear warmup steps (default 100)"),
        ("--weight-decay", float, "AdamW weight decay (default 0.1)"),
        ("--grad-clip", float, "gradient norm clip, 0 = off (default 1.0)"),
        ("--max-steps", int, "optimizer steps (default 2000)"),
        ("--epochs", _positive_int, "passes over the training data, instead of --max-steps"),
        ("--optimizer", str, "adamw | sgd (plain: no momentum, no weight decay) (default adamw)"),
        ("--schedule", str, "learning rate: cosine (warmup, then decay to --min-lr) | step (constant, "
                            "then x --lr-decay per epoch) (default cosine)"),
        ("--lr-decay", float, "--schedule step: multiply the lr by this every epoch ... (default 0.5)"),
        ("--lr-decay-start", int, "... after this many epochs at --lr (default 4)"),
        ("--bptt", _positive_int, "nplm / rnn / lstm / gru: tokens per batch row; the state carries "
                                  "over to the next batch (default 35)"),
        ("--eval-every", _positive_int, "validate and checkpoint every N steps (default 250)"),
        ("--seed", int, "random seed (default 1337)"),
        ("--precision", str, "auto | fp32 | bf16 (autocast); auto picks bf16 only where it is faster"),
    ):
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results at the end")
    p.set_defaults(handler=run_train)


def _tokenizer_options(args: argparse.Namespace, tokenizer: str) -> dict:
    """The tokenizer flags that were given, under the names the tokenizer's `train` takes."""
    word = {"split_punctuation": None if args.word_split is None else args.word_split == "punctuation",
            "lowercase": args.lowercase, "min_freq": args.min_freq, "eos_per_line": args.eos_per_line}
    given = {k: v for k, v in word.items() if v is not None}
    if given and tokenizer != "word":
        flags = {"split_punctuation": "--word-split", "lowercase": "--lowercase", "min_freq": "--min-freq",
                 "eos_per_line": "--no-eos-per-line"}
        raise LmlabError(f"{', '.join(flags[k] for k in given)} {'is' if len(given) == 1 else 'are'} only for "
                         f"--tokenizer word (got --tokenizer {tokenizer})")
    if args.vocab_size:
        given["max_vocab" if tokenizer == "word" else "vocab_size"] = args.vocab_size
    return given


def run_train(args: argparse.Namespace) -> None:
    from lmlab.train import train

    model_keys = ("n_layer", "n_head", "d_model", "context_len", "dropout", "positional", "d_embed", "hidden",
                  "layers", "order", "tie_embeddings", "direct", "smoothing", "k")
    train_keys = ("batch_size", "grad_accum", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
                  "max_steps", "epochs", "optimizer", "schedule", "lr_decay", "lr_decay_start", "bptt",
                  "eval_every", "seed", "precision")
    model, tokenizer = args.model or "gpt", args.tokenizer or "char"
    tokenizer_options = _tokenizer_options(args, tokenizer)
    given = [k for k in model_keys if getattr(args, k) is not None]
    if args.resume:
        if (given or args.data or args.val_data or args.preset or args.model or args.tokenizer
                or tokenizer_options):
            raise LmlabError("--resume continues a run with its own data, tokenizer and model settings; drop "
                             "--data/--val-data/--model/--tokenizer/--preset and model flags (only --max-steps "
                             "or --epochs may change)")
    else:
        _check_family_flags(model, given, args)
    result = train(args.data, out=args.out, model=model, tokenizer=tokenizer, preset=args.preset,
                   val_data=args.val_data, model_overrides={k: getattr(args, k) for k in model_keys},
                   train_overrides={k: getattr(args, k) for k in train_keys},
                   tokenizer_options=tokenizer_options, resume=args.resume, progress=not args.quiet)
    summary = {"train_loss": result.train_loss, "val_loss": result.val_loss, "steps": result.steps,
               "tokens_per_s": round(result.tokens_per_s, 1), "wall_s": round(result.wall_s, 2), "out": result.out}
    if args.json:
        _print_json(summary)
    else:
        val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
        print(f"trained {result.parameters:,} parameters for {result.steps} steps in {result.wall_s:.1f} s "
              f"({result.tokens_per_s:,.0f} tokens/s): train loss {result.train_loss:.4f}, val loss {val}")
        print(f"run directory: {result.out}   next: lmlab generate {result.out} --prompt \"...\"")


def _check_family_flags(family: str, given: list[str], args: argparse.Namespace) -> None:
    """Model flags must be ones the family has (--order means nothing to a GPT); --k is add-k's."""
    from lmlab.models import FAMILIES

    fields = {f.name for f in dataclasses.fields(FAMILIES[family].config_class())}
    wrong = [k for k in given if k not in fields]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise LmlabError(f"{flags} {'does' if len(wrong) == 1 else 'do'} not apply to --model {family}; "
                         f"see `lmlab train --help` for which family each flag is for")
    if args.k is not None and args.smoothing != "add-k":
        raise LmlabError(f"--k is the pseudo-count of --smoothing add-k (got --smoothing {args.smoothing or 'mkn'})")


# --- generate ----------------------------------------------------------------------------------

def _early_stopping(text: str) -> bool | str:
    choices = {"true": True, "false": False, "never": "never"}
    if text.lower() not in choices:
        raise argparse.ArgumentTypeError(f"must be true, false or never, got {text}")
    return choices[text.lower()]


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a trained model",
                       description="Continue a prompt with a model (an lmlab run or a Hugging Face GPT-2 "
                                   "directory), streaming tokens as they arrive. Option names follow "
                                   "Hugging Face generate.")
    p.add_argument("run", help="run directory (from lmlab train), Hugging Face model directory or ARPA file")
    p.add_argument("--prompt", action="append", help="text to continue (repeat for a batch; default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--min-new-tokens", type=int, default=0, help="forbid end-of-text before this many tokens")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--do-sample", action="store_true", help="sample inside beam search (sampling is the default otherwise)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=float, help="sample from the smallest set with this total probability")
    p.add_argument("--min-p", type=float, help="drop tokens below min-p times the top probability")
    p.add_argument("--typical-p", type=float, help="locally typical sampling mass")
    p.add_argument("--repetition-penalty", type=float, help="penalise tokens already present (HF; 1 = off)")
    p.add_argument("--presence-penalty", type=float, default=0.0, help="OpenAI presence penalty (-2..2)")
    p.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI frequency penalty (-2..2)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size")
    p.add_argument("--num-beams", type=int, default=1, help="beam search width (1 = no beam search)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score = logprob / length**this")
    p.add_argument("--early-stopping", type=_early_stopping, default=False, help="true | false | never (beam search)")
    p.add_argument("--num-return-sequences", type=int, default=1, help="sequences per prompt")
    p.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    p.add_argument("--seed", type=int, help="random seed: same seed, same text")
    p.add_argument("--show-probs", type=int, default=0, metavar="N",
                   help="after generating, list each token's N most likely candidates (after the processors)")
    p.add_argument("--dtype", default="float32",
                   help="float32 | bfloat16 | int8 (int8 weights and matmuls: fastest on CPU, approximate)")
    p.add_argument("--json", action="store_true", help='print {"sequences": [{"text", "tokens", "logprob"}...]}')
    p.set_defaults(handler=run_generate)


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    beams = args.num_beams
    return dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                do_sample=False if args.greedy else True if args.do_sample else None, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, typical_p=args.typical_p,
                repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
                frequency_penalty=args.frequency_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
                num_beams=beams, length_penalty=args.length_penalty, early_stopping=args.early_stopping,
                num_return_sequences=args.num_return_sequences, stop=tuple(args.stop), seed=args.seed,
                logprobs=args.show_probs > 0, top_logprobs=args.show_probs)


def run_generate(args: argparse.Namespace) -> None:
    from lmlab.bundle import load
    from lmlab.generate import GenerationConfig

    options = generation_options(args)
    GenerationConfig.from_dict(options)  # bad options fail before the model loads
    prompts = args.prompt or ["\n"]
    bundle = load(args.run, dtype=args.dtype)
    one_stream = len(prompts) == 1 and options["num_beams"] == 1 and options["num_return_sequences"] == 1
    if one_stream and not args.json and not args.show_probs:
        sys.stdout.write(prompts[0])
        sys.stdout.flush()
        for event in bundle.stream(prompts[0], **options):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    output = bundle.generate(prompts, **options)
    if args.json:
        sequences = [{"prompt_index": s.prompt_index, "text": s.text, "tokens": len(s.token_ids),
                      "token_ids": s.token_ids, "logprob": s.logprob, "finish_reason": s.finish_reason}
                     for s in output.sequences]
        _print_json({"sequences": sequences, "text": output.text, "tokens": len(output.sequences[0].token_ids)})
        return
    for sequence in output.sequences:
        print(f"--- prompt {sequence.prompt_index + 1}, logprob {sequence.logprob:.3f}")
        print(prompts[sequence.prompt_index] + sequence.text)
        if args.show_probs:
            print(probability_table(bundle.tokenizer, sequence))


def probability_table(tokenizer: Any, sequence: Any) -> str:
    """Each chosen token with its probability and the most likely candidates at that step."""
    import math

    lines = [f"{'token':>14}  {'prob':>6}   candidates (probability after the processors)"]
    for token_id, logprob, top in zip(sequence.token_ids, sequence.token_logprobs, sequence.top_logprobs or []):
        candidates = "  ".join(f"{tokenizer.decode([i])!r} {math.exp(v):.3f}" for i, v in top)
        lines.append(f"{tokenizer.decode([token_id])!r:>14}  {math.exp(logprob):6.3f}   {candidates}")
    return "\n".join(lines)


# --- export ------------------------------------------------------------------------------------

def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a GPT as a Hugging Face directory, or an n-gram as an ARPA file",
                       description="Export a GPT run to a directory that transformers (and so vLLM / TGI) load, "
                                   "or an n-gram run to an ARPA file that KenLM and SRILM load "
                                   "(and lmlab.load / every lmlab command reads back).")
    p.add_argument("run", help="run directory (from lmlab train: --model gpt for hf, --model ngram for arpa)")
    p.add_argument("--format", default="hf", choices=["hf", "arpa"],
                   help="hf: config.json + model.safetensors + tokenizer (GPT runs); arpa: one ARPA back-off "
                        "file for KenLM / SRILM (n-gram runs, word tokenizer)")
    p.add_argument("--out", required=True, help="directory to write (hf), or FILE.arpa / FILE.arpa.gz (arpa)")
    p.add_argument("--json", action="store_true", help='print {"out", "files"}')
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> None:
    from lmlab.bundle import export_arpa, export_hf

    files = (export_arpa if args.format == "arpa" else export_hf)(args.run, args.out)
    if args.json:
        _print_json({"out": args.out, "files": files})
    else:
        print(f"wrote {', '.join(files)} to {args.out}")


# --- eval --------------------------------------------------------------------------------------

def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss, perplexity and bits per byte of a model on text",
                       description="Evaluate a run on --data, or on its own validation split by default.")
    p.add_argument("run", help="run directory (from lmlab train), Hugging Face directory or ARPA file")
    p.add_argument("--data", help="text file or folder to evaluate on (default: the run's validation split)")
    p.add_argument("--batch-size", type=_positive_int,
                   help="windows per batch (default 16); nplm / rnn / lstm / gru read the text in order, "
                        "carrying their state, as this many rows (default 1: each token sees all text before it)")
    p.add_argument("--json", action="store_true", help='print {"loss", "perplexity", "bits_per_byte", "tokens", "bytes"}')
    p.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> None:
    from lmlab.bundle import load
    from lmlab.data import read_corpus
    from lmlab.evaluate import perplexity
    from lmlab.train.run import validation_split

    bundle = load(args.run)
    if args.data:
        result = perplexity(bundle.model, bundle.tokenizer, read_corpus(args.data), batch_size=args.batch_size)
    elif "data" not in bundle.config:
        raise LmlabError(f"{args.run} is not an lmlab run directory, so it has no validation split: pass --data FILE")
    else:
        stream, n_bytes = validation_split(Path(args.run), bundle.config, bundle.tokenizer)
        result = perplexity(bundle.model, bundle.tokenizer, stream=stream, text_bytes=n_bytes,
                            batch_size=args.batch_size)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(f"loss {result.loss:.4f}  perplexity {result.perplexity:.3f}  bits/byte {result.bits_per_byte:.4f}  "
              f"({result.tokens:,} tokens, {result.bytes:,} bytes)")


# --- tokenize ----------------------------------------------------------------------------------

def add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="show how a tokenizer splits a file",
                       description="Tokenize FILE. char and word tokenizers are built from FILE itself.")
    p.add_argument("file", help="text file to tokenize")
    p.add_argument("--tokenizer", default="gpt2", help="char | word | bpe | gpt2 | PATH.json | RUN_DIR (default gpt2)")
    p.add_argument("--json", action="store_true", help='print {"ids": [...], "tokens": N, "bytes": N}')
    p.set_defaults(handler=run_tokenize)


def run_tokenize(args: argparse.Namespace) -> None:
    from lmlab.data import read_corpus
    from lmlab.tokenize import build_tokenizer

    path = Path(args.file)
    if path.is_dir():
        raise LmlabError(f"{path} is a folder; tokenize one text file at a time")
    text = read_corpus(path)
    tokenizer = build_tokenizer(args.tokenizer, text)
    ids = tokenizer.encode(text)
    n_bytes = len(text.encode("utf-8"))
    if args.json:
        _print_json({"ids": ids, "tokens": len(ids), "bytes": n_bytes})
        return
    print(" ".join(f"{tokenizer.id_to_token(i)!r}:{i}" for i in ids))
    print(f"{len(ids):,} tokens, {n_bytes:,} bytes ({n_bytes / max(len(ids), 1):.2f} bytes/token)", file=sys.stderr)


# --- score / compare ---------------------------------------------------------------------------

def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="log-probability of sentences, token by token",
                       description="Score each sentence given the sentence start: every token and the "
                                   "end-of-sentence token are predicted; prints log-probabilities (natural log).")
    p.add_argument("run", help="run directory, Hugging Face model directory or ARPA file")
    p.add_argument("sentences", nargs="*", help="sentences to score")
    p.add_argument("--file", help="score every non-empty line of this file")
    p.add_argument("--json", action="store_true", help='print {"sentences": [{"text", "logprob", "tokens"}]}')
    p.set_defaults(handler=run_score)


def run_score(args: argparse.Namespace) -> None:
    import math

    from lmlab.bundle import load
    from lmlab.data import read_corpus
    from lmlab.evaluate.score import score_sentence

    sentences = list(args.sentences)
    if args.file:
        sentences += [line for line in read_corpus(args.file).splitlines() if line.strip()]
    if not sentences:
        raise LmlabError("give sentences to score, or --file FILE")
    bundle = load(args.run)
    scores = [score_sentence(bundle.model, bundle.tokenizer, text) for text in sentences]
    if args.json:
        _print_json({"sentences": [{"text": s.text, "logprob": s.logprob, "tokens": len(s.tokens),
                                    "token_logprobs": s.tokens} for s in scores]})
        return
    for s in scores:
        print(f"{s.logprob:10.3f}  (perplexity {s.perplexity:.2f})  {s.text}")
        print("            " + "  ".join(f"{token!r} {lp:.2f}" for token, lp in s.tokens))
    if len(scores) >= 2:
        ratio = math.exp(scores[0].logprob - scores[1].logprob)
        print(f"P(first) / P(second) = {ratio:.4g}")


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="evaluate several runs on the same text, in one table",
                       description="Score every run on --data and print family, parameters, training time, "
                                   "perplexity per token, bits per byte (the fair scale across tokenizers) and "
                                   "tokens/s; also writes PREFIX.md, PREFIX.json and a PREFIX.png bar chart.")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--data", required=True, help="text file or folder to score on")
    p.add_argument("--out", default="comparison", help="file prefix for .md/.json/.png (default: comparison)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    p.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from lmlab.compare import compare_runs, markdown_table, write_comparison
    from lmlab.data import read_corpus

    rows = compare_runs(args.runs, read_corpus(args.data))
    paths = write_comparison(rows, args.out)
    if args.json:
        _print_json({"rows": [asdict(r) for r in rows], "files": [str(p) for p in paths]})
    else:
        print(markdown_table(rows), end="")
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)


# --- main --------------------------------------------------------------------------------------

COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_train, add_generate, add_eval, add_score, add_compare, add_tokenize, add_export)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lmlab", description="Language models from n-grams to transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        args.handler(args)
    except LmlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a path that is a folder, a full disk, no permission: the user's to fix
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
