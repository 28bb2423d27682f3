"""Kneser-Ney and modified Kneser-Ney 3/4/5-gram models on Penn Treebank: build time, scoring time,
test perplexity, and KenLM as the peer.

Data: ../shared/data/ptb (Mikolov's PTB: 10k vocabulary with <unk>). Every line is a sentence; the
perplexity counts each word and each line's </s> (82,430 test tokens), never <s>. Build time is
counting + smoothing from token ids (tokenizing the 5 MB training text is timed on its own line).

Peers, in the same run: KenLM's query module (`pip install kenlm`) loads each exported mkn ARPA
file and scores the test set; its perplexity must equal ours, and its scoring time is the ratio's
denominator. KenLM's builder `lmplz` is not on PyPI: if it is on PATH it is run too (`lmplz -o N`,
with PTB's <unk> renamed, since lmplz rejects that symbol in its input); otherwise the table quotes the published figures for `lmplz -o 5` on this data: test perplexity
141.19, build 1.4 s.

The word tokenizer splits PTB at spaces here (`split_punctuation=False`, `--word-split space`); a
last table trains the highest-order mkn model again with its default punctuation split, which must keep
PTB's own tokens and so give the same test tokens and perplexity.

    python benchmarks/ngram_ptb.py [--orders 3 4 5] [--repeats 3] [--skip-kenlm]

Writes benchmarks/results/ngram_ptb.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmlab.models.ngram import NGramConfig, NGramLM
from lmlab.io.arpa import write_arpa
from lmlab.tokenize.word import WordTokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
RESULTS = Path(__file__).resolve().parent / "results"
PUBLISHED_LMPLZ_5 = {"perplexity": 141.19, "build_s": 1.4}


def best_time(fn, repeats: int):
    """(fastest wall time of `repeats` calls, the last result)."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def kenlm_peer(model: NGramLM, vocab: list[str], test_lines: list[str], workdir: Path, repeats: int) -> dict:
    import kenlm

    path = workdir / f"mkn{model.order}.arpa"
    export_s, _ = best_time(lambda: write_arpa(model, path, vocab), 1)
    start = time.perf_counter()
    oracle = kenlm.Model(str(path))
    load_s = time.perf_counter() - start
    score_s, total = best_time(lambda: sum(oracle.score(line, bos=True, eos=True) for line in test_lines), repeats)
    n_tokens = sum(len(line.split()) + 1 for line in test_lines)
    path.unlink()
    return {"arpa_export_s": export_s, "kenlm_load_s": load_s, "kenlm_score_s": score_s,
            "kenlm_perplexity": 10 ** (-total / n_tokens)}


def lmplz_peer(order: int, train_text: str, test_lines: list[str], workdir: Path) -> dict | None:
    """lmplz refuses a literal <unk> in its input, so PTB's <unk> becomes the ordinary word _unk_ (as
    it is for lmlab) in both the training text and the test lines."""
    if shutil.which("lmplz") is None:
        return None
    import kenlm

    train_path, arpa = workdir / "ptb.train.unk.txt", workdir / f"lmplz{order}.arpa"
    train_path.write_text(train_text.replace("<unk>", "_unk_"), encoding="utf-8")
    start = time.perf_counter()
    with open(train_path, "rb") as src, open(arpa, "wb") as out:
        subprocess.run(["lmplz", "-o", str(order)], stdin=src, stdout=out, stderr=subprocess.DEVNULL, check=True)
    build_s = time.perf_counter() - start
    oracle = kenlm.Model(str(arpa))
    total = sum(oracle.score(line.replace("<unk>", "_unk_"), bos=True, eos=True) for line in test_lines)
    n_tokens = sum(len(line.split()) + 1 for line in test_lines)
    return {"lmplz_build_s": build_s, "lmplz_perplexity": 10 ** (-total / n_tokens)}


def word_split_rows(train_text: str, test_text: str, order: int) -> list[dict]:
    """The mkn `order`-gram's test perplexity with each word split: at spaces, and the default."""
    rows = []
    for split, split_punctuation in (("space", False), ("punctuation (default)", True)):
        tok = WordTokenizer.train(train_text, eos_per_line=True, split_punctuation=split_punctuation)
        config = NGramConfig(vocab_size=tok.vocab_size, order=order, smoothing="mkn", eos_id=tok.special_tokens["<eos>"])
        scores = NGramLM.build(tok.encode_array(train_text), config).token_log_probs(tok.encode_array(test_text))
        rows.append({"split": split, "order": order, "vocab_size": tok.vocab_size, "test_tokens": len(scores),
                     "perplexity": math.exp(-scores.mean()),
                     "same_tokens_as_text_split": tok.split(test_text) == [
                         word for line in test_text.splitlines(keepends=True) for word in [*line.split(), "\n"]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--smoothings", nargs="+", default=["kn", "mkn"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-kenlm", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    train_text = (DATA / "ptb.train.txt").read_text(encoding="utf-8")
    test_text = (DATA / "ptb.test.txt").read_text(encoding="utf-8")
    test_lines = test_text.splitlines()
    start = time.perf_counter()
    tok = WordTokenizer.train(train_text, eos_per_line=True, split_punctuation=False)
    train_ids = tok.encode_array(train_text)
    tokenize_s = time.perf_counter() - start
    test_ids = tok.encode_array(test_text)
    eos = tok.special_tokens["<eos>"]
    try:
        import kenlm  # noqa: F401
        have_kenlm = not args.skip_kenlm
    except ImportError:
        have_kenlm = False

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for smoothing in args.smoothings:
            for order in args.orders:
                config = NGramConfig(vocab_size=tok.vocab_size, order=order, smoothing=smoothing, eos_id=eos)
                build_s, model = best_time(lambda: NGramLM.build(train_ids, config), args.repeats)
                score_s, scores = best_time(lambda: model.token_log_probs(test_ids), args.repeats)
                row = {"smoothing": smoothing, "order": order, "build_s": build_s, "score_s": score_s,
                       "perplexity": math.exp(-scores.mean()), "test_tokens": len(scores),
                       "stored": model.num_parameters()}
                if smoothing == "mkn" and have_kenlm:
                    row.update(kenlm_peer(model, tok.vocab, test_lines, Path(tmp), args.repeats))
                    lmplz = lmplz_peer(order, train_text, test_lines, Path(tmp))
                    if lmplz:
                        row.update(lmplz)
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    lmplz_ran = any("lmplz_perplexity" in r for r in rows)
    lines = [
        f"# N-gram models on PTB (train {len(train_ids):,} tokens, test {len(test_ids):,}, vocab {tok.vocab_size:,})",
        "",
        f"Tokenizing the training text: {tokenize_s:.2f} s (not in build). Times: best of {args.repeats}, "
        "one thread. Scoring = log-probability of every test token.",
        "",
        "| smoothing | order | build s | score s | test ppl | stored probs + backoffs | KenLM ppl (our ARPA) | KenLM score s | score ratio (KenLM / lmlab) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peer = (f"{r['kenlm_perplexity']:.2f} | {r['kenlm_score_s']:.3f} | {r['kenlm_score_s'] / r['score_s']:.2f}"
                if "kenlm_perplexity" in r else "- | - | -")
        lines.append(f"| {r['smoothing']} | {r['order']} | {r['build_s']:.2f} | {r['score_s']:.3f} | "
                     f"{r['perplexity']:.2f} | {r['stored']:,} | {peer} |")
    five = next((r for r in rows if r["smoothing"] == "mkn" and r["order"] == 5), None)
    lines.append("")
    if lmplz_ran:
        lines.append("lmplz ran in this run: " + ", ".join(
            f"{r['order']}-gram {r['lmplz_build_s']:.2f} s, ppl {r['lmplz_perplexity']:.2f}" for r in rows if "lmplz_build_s" in r))
    elif five:
        lines.append(f"lmplz is not installed here, so the builder is compared with its published figures for "
                     f"`lmplz -o 5` on this data: ppl {PUBLISHED_LMPLZ_5['perplexity']} (lmlab mkn 5: "
                     f"{five['perplexity']:.2f}), build {PUBLISHED_LMPLZ_5['build_s']} s (lmlab: {five['build_s']:.2f} s "
                     f"from ids, {five['build_s'] + tokenize_s:.2f} s from text; ratio "
                     f"{(five['build_s'] + tokenize_s) / PUBLISHED_LMPLZ_5['build_s']:.1f}x, measured on another machine).")
    if five and "arpa_export_s" in five:
        lines.append(f"Exporting the mkn 5-gram ARPA file took {five['arpa_export_s']:.1f} s; KenLM loaded it in "
                     f"{five['kenlm_load_s']:.1f} s.")
    splits = word_split_rows(train_text, test_text, order=max(args.orders))
    lines += ["", f"Word tokenizer split, mkn {max(args.orders)}-gram:", "",
              "| split | vocab | test tokens | test ppl | tokens = text.split() + line ends |", "|---|---|---|---|---|"]
    lines += [f"| {r['split']} | {r['vocab_size']:,} | {r['test_tokens']:,} | {r['perplexity']:.2f} | "
              f"{'yes' if r['same_tokens_as_text_split'] else 'no'} |" for r in splits]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ngram_ptb.md").write_text(table, encoding="utf-8")
    (RESULTS / "ngram_ptb.json").write_text(json.dumps({
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "numpy": np.__version__},
        "tokenize_s": tokenize_s, "published_lmplz_5": PUBLISHED_LMPLZ_5, "lmplz_ran": lmplz_ran, "rows": rows,
        "word_split": splits,
    }, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
