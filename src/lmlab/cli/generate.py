"""`lmlab generate`: continue prompts with a model, streaming one answer as it is generated.

The decoding flags are `GenerationConfig`'s fields (lmlab/generate/config.py: names, defaults and
help lines), plus --greedy (= --no-do-sample) and --show-probs N (logprobs with N alternatives).
`decode` is the one place that calls the bundle's decoding.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Iterator, Sequence

from lmlab.cli.flags import add_decoding_arguments, add_model_arguments, config_options, given
from lmlab.cli.output import print_json
from lmlab.generate.config import GenerationConfig

DESCRIPTION = ("Continue a prompt with a model (an lmlab run, a Hugging Face model directory or an ARPA file), "
               "streaming tokens as they arrive. Option names and defaults follow Hugging Face generate.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", action="append", help="text to continue (repeat for a batch; default: a newline)")
    parser.add_argument("--chat", action="store_true",
                        help="each prompt is one user turn, written in the model's chat template; prints the answer")
    decoding = add_decoding_arguments(parser, "how each next token is chosen, and when to stop")
    decoding.add_argument("--show-probs", dest="top_logprobs", type=int, metavar="N", default=argparse.SUPPRESS,
                          help="after generating, list each token's N most likely candidates (after the processors)")
    parser.add_argument("--dtype", default="float32",
                        help="float32 | bfloat16 | int8 (int8 weights and matmuls: fastest on CPU, approximate) "
                             "(default: float32)")
    parser.add_argument("--json", action="store_true",
                        help='print {"sequences": [{"prompt_index", "text", "tokens", "token_ids", "logprob", '
                             '"finish_reason"}], "text", "tokens"}')


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding options given, under GenerationConfig's names (--show-probs N turns on logprobs)."""
    options = given(args, [*config_options(GenerationConfig), "do_sample", "top_logprobs"])
    if "top_logprobs" in options:
        options["logprobs"] = options["top_logprobs"] > 0
    return options


def decode(bundle: Any, prompts: Sequence[str], options: dict[str, Any], *, stream: bool) -> Any:
    """Every call this command makes to the bundle's decoding. With `stream`: the text of
    prompts[0], piece by piece as it is generated; otherwise the whole output (`.text` and
    `.sequences`, each with `prompt_index, text, token_ids, logprob, finish_reason, token_logprobs,
    top_logprobs`)."""
    if stream:
        return (event.text for event in bundle.stream(prompts[0], **options))
    return bundle.generate(list(prompts), **options)


def run(args: argparse.Namespace) -> None:
    from lmlab.bundle import load

    options = generation_options(args)
    config = GenerationConfig.from_dict(options)  # bad options fail before the model loads
    prompts = args.prompt or ["\n"]
    bundle = load(args.run, dtype=args.dtype, device=args.device)
    shown = prompts
    if args.chat:  # the model continues the chat template's text; the user sees the turn and the answer
        from lmlab.chat import Conversation

        prompts = [Conversation(bundle).render([{"role": "user", "content": p}]) for p in prompts]
        shown = [""] * len(prompts)
    one_stream = len(prompts) == 1 and config.num_beams == 1 and config.num_return_sequences == 1
    if one_stream and not args.json and not config.logprobs:
        write_streamed(shown[0], decode(bundle, prompts, options, stream=True))
        return
    output = decode(bundle, prompts, options, stream=False)
    if args.json:
        sequences = [{"prompt_index": s.prompt_index, "text": s.text, "tokens": len(s.token_ids),
                      "token_ids": s.token_ids, "logprob": s.logprob, "finish_reason": s.finish_reason}
                     for s in output.sequences]
        print_json({"sequences": sequences, "text": output.text, "tokens": len(output.sequences[0].token_ids)})
        return
    for sequence in output.sequences:
        print(f"--- prompt {sequence.prompt_index + 1}, logprob {sequence.logprob:.3f}")
        print(shown[sequence.prompt_index] + sequence.text)
        if config.logprobs:
            print(probability_table(bundle.tokenizer, sequence))


def write_streamed(prompt: str, pieces: Iterator[str]) -> None:
    """The prompt, then each piece of text as soon as it arrives, then a newline."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def probability_table(tokenizer: Any, sequence: Any) -> str:
    """Each chosen token with its probability and the most likely candidates at that step."""
    lines = [f"{'token':>14}  {'prob':>6}   candidates (probability after the processors)"]
    for token_id, logprob, top in zip(sequence.token_ids, sequence.token_logprobs, sequence.top_logprobs or []):
        candidates = "  ".join(f"{tokenizer.decode([i])!r} {math.exp(v):.3f}" for i, v in top)
        lines.append(f"{tokenizer.decode([token_id])!r:>14}  {math.exp(logprob):6.3f}   {candidates}")
    return "\n".join(lines)
