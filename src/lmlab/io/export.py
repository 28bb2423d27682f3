"""Writing lmlab runs in other tools' formats: Hugging Face directories and ARPA files.

Which runs export to which format is data, not a family's name: a run exports to Hugging Face
format if its family has a converter in `lmlab.io.hf.EXPORTS`, and to ARPA if its family is of the
counted kind and its tokenizer splits text into words (an ARPA file holds words). `FORMATS` maps
each format to its exporter. Nothing is written into a folder that holds files or over a file, every
file is written atomically, and everything is checked before the first file is written.
Reading these formats back is io/sources.py's job.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from lmlab.atomic import check_new_folder
from lmlab.errors import LmlabError
from lmlab.io.arpa import ARPA_SUFFIXES, write_arpa
from lmlab.io.checkpoint import MODEL_FILE, TOKENIZER_FILE, load_tensors, read_run_config
from lmlab.io.hf import (HF_CONFIG_FILE, HF_WEIGHTS_FILE, export_converter, hf_directory, write_hf_files,
                         write_hf_tokenizer)
from lmlab.io.sources import load_run
from lmlab.models import families_of_kind, family_of
from lmlab.tokenize import WordTokenizer
from lmlab.tokenize import load as load_tokenizer


def export_hf(run_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Write a run as a Hugging Face directory (config.json, model.safetensors, the tokenizer) that
    transformers, vLLM and TGI load; returns the file names written.

    Byte-level tokenizers (bpe, gpt2) are written as a Hugging Face tokenizer.json; char and word
    tokenizers, which transformers cannot express, as lmlab_tokenizer.json.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = read_run_config(run_dir)
    check_new_folder(out_dir)
    converter = export_converter(config["model"]["family"], run_dir)
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    tensors, _ = load_tensors(run_dir / MODEL_FILE)
    hf_config, hf_tensors = hf_directory(converter, config["model"]["config"], tensors, tokenizer.eot_id)
    tokenizer_file = write_hf_tokenizer(tokenizer, out_dir)
    write_hf_files(out_dir, hf_config, hf_tensors)  # config.json last: a folder with one is complete
    return [HF_CONFIG_FILE, HF_WEIGHTS_FILE, tokenizer_file]


def export_arpa(run_dir: str | Path, out_path: str | Path) -> list[str]:
    """Write a counted (n-gram) run as an ARPA file, compressed if the name ends in .gz, that KenLM
    and SRILM read; returns the file name written."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    if not out_path.name.endswith(ARPA_SUFFIXES):
        raise LmlabError(f"name the ARPA file *.arpa or *.arpa.gz, got {out_path.name}")
    if out_path.exists():
        raise LmlabError(f"{out_path} already exists; give a new file name (lmlab never writes over a file)")
    loaded = load_run(run_dir)
    family = family_of(loaded.model)
    if family.kind != "counted":
        raise LmlabError(f"only counted models ({', '.join(families_of_kind('counted'))}) export to ARPA; "
                         f"{run_dir} is a {family.name} run")
    if not isinstance(loaded.tokenizer, WordTokenizer):
        raise LmlabError(f"ARPA files hold words: {run_dir} was trained on {loaded.tokenizer.kind} tokens; "
                         f"train the n-gram with tokenizer 'word' to export it", params=("tokenizer",))
    write_arpa(loaded.model, out_path, loaded.tokenizer.vocab)
    return [out_path.name]


FORMATS: Mapping[str, Callable[[str | Path, str | Path], list[str]]] = {"hf": export_hf, "arpa": export_arpa}


def export(run_dir: str | Path, out: str | Path, format: str = "hf") -> list[str]:
    """Write a run in `format` ("hf" or "arpa") to `out`; returns the file names written."""
    if format not in FORMATS:
        raise LmlabError(f"format must be one of {', '.join(FORMATS)}, got {format!r}", params=("format",))
    return FORMATS[format](run_dir, out)
