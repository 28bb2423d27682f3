"""`lmlab export`: a run as a Hugging Face directory or as an ARPA file.

The exporters live in lmlab.io.export, imported when the command runs.
"""
from __future__ import annotations

import argparse

from lmlab.cli.output import print_json

DESCRIPTION = ("Export a run to a directory that transformers (and so vLLM / TGI) load, or a counted (n-gram) "
               "run to an ARPA file that KenLM and SRILM load (and lmlab.load / every lmlab command reads back).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (from lmlab train)")
    parser.add_argument("--format", default="hf", choices=["hf", "arpa"],
                        help="hf: config.json + model.safetensors + tokenizer (the families Hugging Face has); arpa: "
                             "one ARPA back-off file for KenLM / SRILM (counted runs with a word tokenizer) "
                             "(default: hf)")
    parser.add_argument("--out", required=True, help="directory to write (hf), or FILE.arpa / FILE.arpa.gz (arpa)")
    parser.add_argument("--json", action="store_true", help='print {"out", "files"}')


def run(args: argparse.Namespace) -> None:
    from lmlab.io.export import export_arpa, export_hf

    files = (export_arpa if args.format == "arpa" else export_hf)(args.run, args.out)
    if args.json:
        print_json({"out": args.out, "files": files})
    else:
        print(f"wrote {', '.join(files)} to {args.out}")
