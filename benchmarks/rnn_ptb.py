"""Zaremba et al.'s small LSTM on Penn Treebank, and a GRU, a vanilla RNN and a Bengio NPLM beside it:
test perplexity and wall time.

Recipe (Zaremba, Sutskever and Vinyals 2014, "small", non-regularized): 2 layers x 200 units,
embeddings 200, unrolled 20 steps, batch 20, 13 epochs of plain SGD at lr 1, halved every epoch
after the 4th, gradient norm clipped at 5, no dropout, every weight uniform(-0.1, 0.1). Their loss is
summed over the 20 unrolled steps (averaged over the batch); lmlab's is the mean per token, so
their lr 1 and clip 5 are lr 20 and clip 0.25 here: the very same update (as in PyTorch's
word_language_model example). They publish valid 120.7 / test 114.5 for this model.
The GRU takes the same recipe with the cell swapped; so does the tanh RNN, but at lr 2 (lr 20
diverged within the first epoch on a slice of PTB, while lr 1 and 5 did not). The NPLM (order 5,
Bengio et al. 2003) trains with AdamW and a cosine schedule for 6 epochs.

Data: ../shared/data/ptb (Mikolov's PTB, 10k vocabulary with <unk>), word-level, every line end an
<eos> that is predicted. Test perplexity reads the test set in order with batch 1, carrying the state
(as Zaremba's test run does), and counts every word and every <eos>: 82,430 tokens, the count of
benchmarks/ngram_ptb.py, whose modified Kneser-Ney 5-gram is the classic baseline (141.2).

Peer, in the same run: the same LSTM trained by the plain PyTorch loop most code uses (pytorch/
examples word_language_model style: batchify, detach the hidden state, clip, SGD by hand); the
ratio of wall times is lmlab's overhead.

    python benchmarks/rnn_ptb.py [--models lstm gru rnn nplm] [--epochs 13] [--skip-baseline]
    python benchmarks/rnn_ptb.py --quick     # a slice of PTB, one epoch: checks that everything runs

Writes benchmarks/results/rnn_ptb.{json,md} (with --quick: rnn_ptb_quick.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import lmlab
from lmlab.data import TokenStream
from lmlab.evaluate import perplexity
from lmlab.tokenize import WordTokenizer
from lmlab.train import train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
RESULTS = Path(__file__).resolve().parent / "results"
ZAREMBA_SMALL = {"valid_perplexity": 120.7, "test_perplexity": 114.5}
WORD = dict(split_punctuation=False, eos_per_line=True)  # PTB is already tokenized: split at spaces only

SMALL = dict(d_embed=200, hidden=200, layers=2, dropout=0.0, init_scale=0.1)
ZAREMBA_TRAIN = dict(optimizer="sgd", lr=20.0, grad_clip=0.25, schedule="step", lr_decay=0.5, lr_decay_start=4,
                     warmup_steps=0, batch_size=20, bptt=20)
RECIPES = {
    "lstm": (SMALL, ZAREMBA_TRAIN),
    "gru": (SMALL, ZAREMBA_TRAIN),
    "rnn": (SMALL, {**ZAREMBA_TRAIN, "lr": 2.0}),
    "nplm": (dict(order=5, d_embed=128, hidden=256, dropout=0.3),
             dict(optimizer="adamw", lr=2e-3, min_lr=1e-4, warmup_steps=200, weight_decay=0.1, grad_clip=1.0,
                  batch_size=32, bptt=32)),
}


def read(name: str, max_lines: int | None) -> str:
    lines = (DATA / f"ptb.{name}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(lines[:max_lines])


def run_lmlab(family: str, epochs: int, files: dict[str, Path], workdir: Path) -> dict:
    model, recipe = RECIPES[family]
    out = workdir / family
    result = train(str(files["train"]), val_data=str(files["valid"]), out=out, model=family, tokenizer="word",
                   tokenizer_options=dict(WORD), model_overrides=dict(model),
                   train_overrides={**recipe, "epochs": epochs, "eval_every": 10**9}, progress=False)
    config = json.loads((out / "config.json").read_text())
    per_epoch = config["train"]["max_steps"] // epochs
    bundle = lmlab.load(out)
    started = time.perf_counter()
    test = perplexity(bundle.model, bundle.tokenizer, "\n" + files["test"].read_text(encoding="utf-8"))
    return {"impl": "lmlab", "family": family, "parameters": result.parameters, "epochs": epochs,
            "steps": result.steps, "steps_per_epoch": per_epoch, "vocab_size": bundle.tokenizer.vocab_size,
            "valid_perplexity": math.exp(result.val_loss), "test_perplexity": test.perplexity,
            "test_tokens": test.tokens, "wall_s": result.wall_s, "test_eval_s": time.perf_counter() - started,
            "tokens_per_s": result.tokens_per_s, "model": model, "train": {**recipe, "epochs": epochs}}


class PlainLSTM(nn.Module):
    """The peer's model, written the usual way (as in pytorch/examples word_language_model)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, 200)
        self.rnn = nn.LSTM(200, 200, 2, batch_first=True)
        self.decoder = nn.Linear(200, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.encoder(x), hidden)
        return self.decoder(out), hidden


def run_plain_loop(epochs: int, files: dict[str, Path]) -> dict:
    """The peer: the same LSTM, data and recipe in a plain PyTorch loop."""
    tok = WordTokenizer.train(files["train"].read_text(encoding="utf-8"), **WORD)
    data = torch.tensor(tok.encode(files["train"].read_text(encoding="utf-8")))
    rows = len(data) // 20
    data = data[: rows * 20].view(20, rows)  # batchify: 20 contiguous rows
    torch.manual_seed(1337)
    model = PlainLSTM(tok.vocab_size)
    started = time.perf_counter()
    steps = 0
    for epoch in range(epochs):
        lr = 20.0 * 0.5 ** max(0, epoch - 4 + 1)
        hidden = None
        for i in range(0, rows - 1, 20):
            x, y = data[:, i: i + 20], data[:, i + 1: i + 21]
            x = x[:, : y.size(1)]
            hidden = None if hidden is None else tuple(h.detach() for h in hidden)
            logits, hidden = model(x, hidden)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            model.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            loss.item()
            steps += 1
    wall = time.perf_counter() - started
    model.eval()
    test = TokenStream.from_ids(tok.encode("\n" + files["test"].read_text(encoding="utf-8")))
    total, count, hidden = 0.0, 0, None
    with torch.no_grad():
        for x, y in test.sequential_batches(1, 256):
            logits, hidden = model(x, hidden)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    return {"impl": "plain PyTorch loop", "family": "lstm", "epochs": epochs, "steps": steps,
            "test_perplexity": math.exp(total / count), "test_tokens": count, "wall_s": wall,
            "tokens_per_s": steps * 400 / wall}


def markdown(rows: list[dict], quick: bool) -> str:
    lines = [("**quick run: a slice of PTB, not comparable to published figures**\n" if quick else ""),
             "| model | implementation | parameters | epochs | steps | valid ppl | test ppl | train wall s | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        valid = f"{r['valid_perplexity']:.1f}" if "valid_perplexity" in r else "-"
        params = f"{r['parameters']:,}" if "parameters" in r else "same"
        lines.append(f"| {r['family']} | {r['impl']} | {params} | {r['epochs']} | {r['steps']:,} | {valid} "
                     f"| {r['test_perplexity']:.1f} | {r['wall_s']:.1f} | {r['tokens_per_s']:,.0f} |")
    lines.append(f"| lstm | Zaremba et al. 2014 (published) | 4.65M | 13 | - | {ZAREMBA_SMALL['valid_perplexity']} "
                 f"| {ZAREMBA_SMALL['test_perplexity']} | - | - |")
    ours = [r for r in rows if r["impl"] == "lmlab" and r["family"] == "lstm"]
    peer = [r for r in rows if r["impl"] != "lmlab"]
    if ours and peer:
        lines.append(f"\nlmlab trains the LSTM at {peer[0]['wall_s'] / ours[0]['wall_s']:.2f}x the speed of the plain "
                     f"loop in this run.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, help="epochs for every model (default: 13, NPLM 6; --quick: 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not train the plain-loop peer")
    parser.add_argument("--quick", action="store_true", help="first 2,000 / 200 / 200 lines of train / valid / test")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    limits = dict(train=2000, valid=200, test=200) if args.quick else dict(train=None, valid=None, test=None)
    workdir = Path(tempfile.mkdtemp(prefix="lmlab-rnn-ptb-"))
    rows = []
    try:
        files = {}
        for name, limit in limits.items():
            files[name] = workdir / f"ptb.{name}.txt"
            files[name].write_text(read(name, limit), encoding="utf-8")
        for family in args.models:
            epochs = args.epochs or (1 if args.quick else 6 if family == "nplm" else 13)
            rows.append(run_lmlab(family, epochs, files, workdir))
            print(json.dumps(rows[-1]), flush=True)
        if not args.skip_baseline and "lstm" in args.models:
            rows.append(run_plain_loop(args.epochs or (1 if args.quick else 13), files))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    name = "rnn_ptb_quick" if args.quick else "rnn_ptb"
    report = {"quick": args.quick, "zaremba_small_published": ZAREMBA_SMALL, "runs": rows,
              "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(rows, args.quick)
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
