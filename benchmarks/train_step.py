"""What a training step of the Shakespeare GPT costs, and what each choice in lmlab's loop buys.

The model and batches of benchmarks/shakespeare_char.py (4 layers, 4 heads, d_model 128, context
64, batch 12, char-level Tiny Shakespeare). Each variant changes one thing against lmlab's loop
(fused AdamW, the fused attention kernel, fp32, no clipping, the loss read back every 10 steps,
no torch.compile);
the last one is the plain loop of shakespeare_char.py's peer. The variants run interleaved, in a
rotating order, `--repeats` times, `--steps` steps each after a few warm-up steps; a variant's
ratio is the median over repeats of its time over lmlab's time in the same repeat, so load from
other processes hits all of them alike.

    python benchmarks/train_step.py [--steps 100] [--repeats 3] [--threads 2]

Writes benchmarks/results/train_step.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from lmlab.data import TokenStream, default_corpus_path, read_corpus, split_text
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.tokenize import CharTokenizer

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = dict(n_layer=4, n_head=4, d_model=128, context_len=64, dropout=0.0)
BATCH, WARMUP = 12, 5

# name: (what changes, options)
VARIANTS = {
    "lmlab": ("lmlab's loop: fused AdamW, SDPA attention, fp32, no clipping", {}),
    "foreach-adamw": ("AdamW's foreach implementation instead of the fused one", {"fused": False}),
    "manual-attention": ("attention written out (softmax(QK^T)V) instead of SDPA", {"attention": "manual"}),
    "clip": ("gradient clipping at 1.0 (nanoGPT's setting)", {"clip": 1.0}),
    "sync-every-step": ("the loss read back (.item()) every step", {"sync_every": 1}),
    "bf16": ("bf16 autocast", {"bf16": True}),
    "compiled": ("the model compiled by torch.compile (its compile time not counted)", {"compiled": True}),
    "plain-loop": ("the peer's plain loop: foreach AdamW, clipping, .item() every step",
                   {"fused": False, "clip": 1.0, "sync_every": 1}),
}


def make_step(stream: TokenStream, vocab_size: int, fused: bool = True, attention: str = "sdpa",
              clip: float = 0.0, sync_every: int = 10, bf16: bool = False, compiled: bool = False
              ) -> Callable[[int], None]:
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=vocab_size, attention=attention, **MODEL)).train()
    forward = torch.compile(model) if compiled else model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99), fused=fused, foreach=None if fused else True)
    rng = torch.Generator().manual_seed(1337)
    total = torch.zeros(())

    def step(i: int) -> None:
        x, y = stream.random_windows(BATCH, MODEL["context_len"], rng)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = forward(x, y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total.add_(loss.detach())
        if (i + 1) % sync_every == 0:
            total.item()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_text, _ = split_text(read_corpus(default_corpus_path()))
    tok = CharTokenizer.train(train_text)
    stream = TokenStream(tok.encode_array(train_text))
    steps = {name: make_step(stream, tok.vocab_size, **options) for name, (_, options) in VARIANTS.items()}
    for step in steps.values():
        for i in range(WARMUP):
            step(i)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()[0]
    names = list(VARIANTS)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            started = time.perf_counter()
            for i in range(args.steps):
                steps[name](i)
            times[name].append(1000 * (time.perf_counter() - started) / args.steps)
    rows = []
    for name, (what, _) in VARIANTS.items():
        ratios = [ours / theirs for ours, theirs in zip(times["lmlab"], times[name])]
        rows.append({"variant": name, "change": what, "ms_per_step": statistics.median(times[name]),
                     "speed_vs_lmlab": statistics.median(ratios), "range": [min(ratios), max(ratios)],
                     "times_ms": times[name]})
    report = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "rows": rows,
              "load_average": [load_before, os.getloadavg()[0]],
              "machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                          "python": platform.python_version()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_step.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Shakespeare GPT training step, {args.threads} threads, {args.steps} steps x {args.repeats} interleaved "
             f"repeats, CPU {report['machine']['cpu_capability']}, load average {load_before:.1f} before.\n",
             "| variant | change against lmlab's loop | ms/step (median) | speed vs lmlab (median, range) |",
             "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['change']} | {r['ms_per_step']:.1f} | {r['speed_vs_lmlab']:.2f}x "
                     f"({r['range'][0]:.2f}-{r['range'][1]:.2f}) |")
    (RESULTS / "train_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
