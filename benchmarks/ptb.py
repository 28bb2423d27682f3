"""Every language-model family on Penn Treebank, under one contract: test perplexity and wall time.

Data: ../shared/data/ptb (Mikolov's PTB, standard train / valid / test splits, its own 10k
vocabulary with <unk>), word-level, split at spaces only (the text is already tokenized), every line
end an <eos> that is predicted and counted: 82,430 test tokens, the count behind the published
figures. Each model is trained by `lmlab.train` into its own run directory (kept, so `lmlab
compare`, `eval`, `generate` and `score` work on them afterwards) and scored on the test set by
`lmlab.compare`, the code behind `lmlab compare`. Recurrent models read the test set in order with
batch 1, carrying their state (as Zaremba et al.'s test run does); the GPT reads it in
non-overlapping windows of its context.

The recipes:
- mkn3 / mkn4 / mkn5: interpolated modified Kneser-Ney (Chen & Goodman), counted in one pass.
  Target: KN 5-gram <= 141.2 (Mikolov et al.; KenLM's `lmplz -o 5` gives 141.19 on this data, in
  1.4 s; benchmarks/ngram_ptb.py runs KenLM as the peer).
- lstm: Zaremba, Sutskever and Vinyals 2014, "small" (non-regularized): 2 layers x 200, embeddings
  200, unrolled 20 steps, batch 20, 13 epochs of plain SGD at lr 1 halved every epoch after the 4th,
  gradient norm clipped at 5, no dropout, weights uniform(-0.1, 0.1); published valid 120.7 / test
  114.5. Their loss is summed over the 20 unrolled steps (averaged over the batch); lmlab's is the mean
  per token, so their lr 1 and clip 5 are lr 20 and clip 0.25 here: the very same update.
- gru and rnn (tanh): the same model size, unroll, batch and clipping, with shorter schedules to fit
  the whole benchmark in about two hours on two cores: the GRU 6 epochs at lr 10, halved every epoch
  after the 2nd (one epoch on a slice of PTB: valid perplexity 1,511 at lr 20, 416 at lr 10, 473 at
  lr 5); the tanh RNN 3 epochs at lr 2, halved after the 1st (lr 20 diverges within the first epoch;
  lr 1 and 5 do not).
- nplm: Bengio et al. 2003, order 5 (four words of context), AdamW with a cosine schedule, 2 epochs.
- gpt: a small GPT (4 layers, 4 heads, d_model 192, context 128, dropout 0.3), AdamW, cosine.
- lstm-peer (with --peer): the same LSTM, data and recipe trained by the plain PyTorch loop most code
  uses (batchify, detach the hidden state, clip, SGD by hand); the ratio of wall times is lmlab's cost.

Jobs run `--jobs` at a time with `--threads` torch threads each. A finished model leaves
RUNS/NAME/ptb_result.json, so an interrupted benchmark continues where it stopped; a half-trained
one resumes from its last checkpoint. The tables, of every finished model in the runs directory,
are rewritten after every finished job.

    python benchmarks/ptb.py [--models mkn3 ... gpt] [--jobs 2 --threads 1] [--peer] [--runs DIR]
    python benchmarks/ptb.py --models lstm --jobs 1 --threads 2 && python benchmarks/ptb.py   # as measured
    python benchmarks/ptb.py --quick     # a slice of PTB, one epoch each: checks that everything runs
    lmlab compare benchmarks/runs/ptb/* --data ../shared/data/ptb/ptb.test.txt   # afterwards

Writes benchmarks/results/ptb.{json,md} (with --quick: ptb_quick.{json,md}) and the `lmlab compare`
table, JSON and bar chart as benchmarks/results/ptb_compare.{md,json,png}.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parent / "runs" / "ptb"
RESULT_FILE = "ptb_result.json"
PUBLISHED = {"mkn5": ("Mikolov et al. 2011, KN 5-gram", 141.2), "lstm": ("Zaremba et al. 2014, small", 114.5)}
WORD = dict(split_punctuation=False, eos_per_line=True)  # PTB is already tokenized: split at spaces only

SMALL_RNN = dict(d_embed=200, hidden=200, layers=2, dropout=0.0, init_scale=0.1)
ZAREMBA = dict(optimizer="sgd", lr=20.0, grad_clip=0.25, schedule="step", lr_decay=0.5, lr_decay_start=4,
               warmup_steps=0, batch_size=20, bptt=20, epochs=13)
ADAMW = dict(optimizer="adamw", min_lr=1e-4, warmup_steps=200, weight_decay=0.1, grad_clip=1.0)
RECIPES = {  # name: (family, model options, training options)
    "mkn3": ("ngram", dict(order=3, smoothing="mkn"), {}),
    "mkn4": ("ngram", dict(order=4, smoothing="mkn"), {}),
    "mkn5": ("ngram", dict(order=5, smoothing="mkn"), {}),
    "nplm": ("nplm", dict(order=5, d_embed=128, hidden=256, dropout=0.3),
             dict(ADAMW, lr=2e-3, batch_size=32, bptt=32, epochs=2)),
    "rnn": ("rnn", SMALL_RNN, dict(ZAREMBA, lr=2.0, epochs=3, lr_decay_start=1)),
    "gru": ("gru", SMALL_RNN, dict(ZAREMBA, lr=10.0, epochs=6, lr_decay_start=2)),
    "lstm": ("lstm", SMALL_RNN, ZAREMBA),
    "gpt": ("gpt", dict(n_layer=4, n_head=4, d_model=192, context_len=128, dropout=0.3),
            dict(ADAMW, lr=1e-3, batch_size=16, epochs=4)),
}
ORDER = ["mkn3", "mkn4", "mkn5", "lstm", "gpt", "gru", "rnn", "nplm"]  # longest first, after the quick ones


def split_files(workdir: Path, quick: bool) -> dict[str, Path]:
    """The three splits as files (with --quick: their first 2,000 / 200 / 200 lines)."""
    limits = dict(train=2000, valid=200, test=200) if quick else dict(train=None, valid=None, test=None)
    files = {}
    for name, limit in limits.items():
        lines = (DATA / f"ptb.{name}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
        files[name] = workdir / f"ptb.{name}.txt"
        if not files[name].exists():
            files[name].write_text("".join(lines[:limit]), encoding="utf-8")
    return files


def run_model(name: str, files: dict[str, str], runs: str, threads: int, quick: bool) -> dict:
    """Train (or resume) one recipe into RUNS/NAME and score it on the test set."""
    import torch

    from lmlab.compare import compare_runs
    from lmlab.train import train

    torch.set_num_threads(threads)
    family, model, recipe = RECIPES[name]
    recipe = {**recipe, "eval_every": 2000}  # a checkpoint (and a 20-batch validation estimate) every 2,000 steps
    if quick and "epochs" in recipe:
        recipe["epochs"] = 1
    out = Path(runs) / name
    started = time.perf_counter()
    if (out / "config.json").exists():
        result = train(out=out, resume=True, progress=False)
    else:
        shutil.rmtree(out, ignore_errors=True)  # a set-up that was stopped before config.json: start again
        result = train(files["train"], val_data=files["valid"], out=out, model=family, tokenizer="word",
                       tokenizer_options=dict(WORD), model_overrides=dict(model), train_overrides=recipe,
                       progress=False)
    wall = time.perf_counter() - started
    test_text = Path(files["test"]).read_text(encoding="utf-8")
    [scored] = compare_runs([out], test_text)
    row = {"name": name, "family": family, "parameters": scored.parameters, "steps": result.steps,
           "valid_perplexity": math.exp(result.val_loss) if result.val_loss is not None else None,
           "test_perplexity": scored.perplexity, "test_bits_per_byte": scored.bits_per_byte,
           "test_tokens": scored.tokens, "train_s": scored.train_s if scored.train_s is not None else wall,
           "scored_tokens_per_s": scored.scored_tokens_per_s, "threads": threads,
           "model": model, "train": recipe}
    (out / RESULT_FILE).write_text(json.dumps(row, indent=2) + "\n")
    return row


def run_plain_lstm(files: dict[str, str], runs: str, threads: int, quick: bool) -> dict:
    """The peer: Zaremba's small LSTM in the plain PyTorch loop (pytorch/examples word_language_model style)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from lmlab.tokenize import WordTokenizer

    torch.set_num_threads(threads)
    epochs = 1 if quick else ZAREMBA["epochs"]
    train_text = Path(files["train"]).read_text(encoding="utf-8")
    tok = WordTokenizer.train(train_text, **WORD)
    data = torch.tensor(tok.encode(train_text))
    columns = len(data) // 20
    data = data[: columns * 20].view(20, columns)  # batchify: 20 contiguous rows
    torch.manual_seed(1337)
    encoder, rnn, decoder = nn.Embedding(tok.vocab_size, 200), nn.LSTM(200, 200, 2, batch_first=True), \
        nn.Linear(200, tok.vocab_size)
    params = [p for m in (encoder, rnn, decoder) for p in m.parameters()]
    for p in params:
        nn.init.uniform_(p, -0.1, 0.1)
    started, steps = time.perf_counter(), 0
    for epoch in range(epochs):
        lr, hidden = 20.0 * 0.5 ** max(0, epoch - 3), None
        for i in range(0, columns - 1, 20):
            x, y = data[:, i: i + 20], data[:, i + 1: i + 21]
            x = x[:, : y.size(1)]
            hidden = None if hidden is None else tuple(h.detach() for h in hidden)
            out, hidden = rnn(encoder(x), hidden)
            loss = F.cross_entropy(decoder(out).reshape(-1, tok.vocab_size), y.reshape(-1))
            for p in params:
                p.grad = None
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.25)
            with torch.no_grad():
                for p in params:
                    p.add_(p.grad, alpha=-lr)
            loss.item()
            steps += 1
    wall = time.perf_counter() - started
    test = torch.tensor(tok.encode(Path(files["test"]).read_text(encoding="utf-8")))
    total, hidden = 0.0, None
    with torch.no_grad():
        for i in range(0, len(test) - 1, 256):
            x, y = test[i: i + 256], test[i + 1: i + 257]
            out, hidden = rnn(encoder(x[: len(y)])[None], hidden)
            total += F.cross_entropy(decoder(out[0]), y, reduction="sum").item()
    row = {"name": "lstm-peer", "family": "lstm", "steps": steps, "test_perplexity": math.exp(total / (len(test) - 1)),
           "test_tokens": len(test) - 1, "train_s": wall, "threads": threads}
    out_dir = Path(runs) / "lstm-peer"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULT_FILE).write_text(json.dumps(row, indent=2) + "\n")
    return row


def markdown(rows: list[dict], quick: bool) -> str:
    lines = (["**quick run: a slice of PTB, one epoch; not comparable to published figures**\n"] if quick else []) + [
             "| model | family | parameters | steps | valid ppl | test ppl | published test ppl | test bits/byte "
             "| train wall s | threads | tokens/s scored |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    counted = "- (counted)"
    for r in rows:
        published = PUBLISHED.get(r["name"])
        valid = f"{r['valid_perplexity']:.1f}" if r.get("valid_perplexity") else "-"
        params = f"{r['parameters']:,}" if "parameters" in r else "same as lstm"
        bpb = f"{r['test_bits_per_byte']:.4f}" if "test_bits_per_byte" in r else "-"
        speed = f"{r['scored_tokens_per_s']:,.0f}" if "scored_tokens_per_s" in r else "-"
        steps = counted if r["family"] == "ngram" else f"{r['steps']:,}"
        lines.append(f"| {r['name']} | {r['family']} | {params} | {steps} | {valid} | {r['test_perplexity']:.2f} "
                     f"| {f'{published[1]} ({published[0]})' if published else '-'} | {bpb} | {r['train_s']:.1f} "
                     f"| {r['threads']} | {speed} |")
    ours = {r["name"]: r for r in rows}
    if "lstm" in ours and "lstm-peer" in ours:
        lines.append(f"\nlmlab trains the LSTM at {ours['lstm-peer']['train_s'] / ours['lstm']['train_s']:.2f}x the "
                     f"speed of the plain PyTorch loop (same recipe, same threads, same run).")
    return "\n".join(lines) + "\n"


def write_tables(runs: Path, quick: bool) -> None:
    """The tables of every finished model in `runs`, whichever ones this invocation trains."""
    rows = [json.loads((runs / n / RESULT_FILE).read_text()) for n in [*ORDER, "lstm-peer"]
            if (runs / n / RESULT_FILE).exists()]
    stem = "ptb_quick" if quick else "ptb"
    RESULTS.mkdir(parents=True, exist_ok=True)
    import torch

    report = {"quick": quick, "published": PUBLISHED, "runs": rows,
              "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}}
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(rows, quick))
    if not quick:  # the `lmlab compare` table and chart, from the test scores run_model already made
        from lmlab.compare import ComparisonRow, write_comparison

        compared = [ComparisonRow(run=str(runs / r["name"]), family=r["family"], tokenizer="word",
                                  parameters=r["parameters"], train_s=r["train_s"], perplexity=r["test_perplexity"],
                                  bits_per_byte=r["test_bits_per_byte"], tokens=r["test_tokens"],
                                  scored_tokens_per_s=r["scored_tokens_per_s"])
                    for r in rows if r["name"] in RECIPES]
        if compared:
            write_comparison(compared, RESULTS / "ptb_compare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=ORDER, choices=list(RECIPES))
    parser.add_argument("--peer", action="store_true", help="also train the LSTM in a plain PyTorch loop")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument("--runs", type=Path, help=f"run directories (default {RUNS}; --quick: a _quick sibling)")
    parser.add_argument("--quick", action="store_true", help="first 2,000 / 200 / 200 lines, one epoch each")
    args = parser.parse_args()
    runs = args.runs or (RUNS.with_name("ptb_quick") if args.quick else RUNS)
    runs.mkdir(parents=True, exist_ok=True)
    files = {k: str(v) for k, v in split_files(runs, args.quick).items()}
    names = [n for n in ORDER if n in args.models] + (["lstm-peer"] if args.peer else [])
    todo = [n for n in names if not (runs / n / RESULT_FILE).exists()]
    write_tables(runs, args.quick)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {}
        for name in todo:
            job = (run_plain_lstm, files, str(runs), args.threads, args.quick) if name == "lstm-peer" else \
                (run_model, name, files, str(runs), args.threads, args.quick)
            pending[pool.submit(*job)] = name
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                print(json.dumps(future.result()), flush=True)
                write_tables(runs, args.quick)
    print((RESULTS / ("ptb_quick.md" if args.quick else "ptb.md")).read_text())


if __name__ == "__main__":
    main()
