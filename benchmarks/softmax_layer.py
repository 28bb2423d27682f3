"""What the fused softmax layer (lmlab.models.base.SoftmaxLayer) buys a training step.

Each case builds an lmlab model and runs its training step (forward, backward, clipping where the
recipe clips, optimizer) on real batches, twice over: once through the fused layer and once through
`F.linear` and `lm_loss` (the two paths are chosen by lmlab.models.base.FUSED_MIN_VOCAB, set to 0 or
past the vocabulary for each timed block). The blocks alternate, `--repeats` times each; a case's
speed-up is the median over repeats of the plain block's time over the fused block's next to it, so
load from other processes hits both alike.

- lstm-ptb: the PTB LSTM of benchmarks/ptb.py (Zaremba et al.'s small configuration, V = 10,000).
- nplm-ptb: the PTB NPLM of benchmarks/ptb.py (order 5, no direct connections, V = 10,000).
- gpt-gpt2-vocab: the Shakespeare GPT's shape (4 x 128, context 64, batch 12) with the GPT-2
  vocabulary (V = 50,257).
- gpt-char: the Shakespeare GPT itself (V = 65), which is why the fused layer has a minimum
  vocabulary.

    python benchmarks/softmax_layer.py [--repeats 8] [--threads 2]

Writes benchmarks/results/softmax_layer.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from lmlab.models import base
from lmlab.models.nplm import NPLM, NPLMConfig
from lmlab.runtime import keep_freed_memory
from lmlab.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_floor import gpt_step, in_order_step, lstm_step, ptb_stream  # noqa: E402  (shared with step_floor.py)

RESULTS = Path(__file__).resolve().parent / "results"

def nplm_step() -> Callable[[], None]:
    """The PTB NPLM of benchmarks/ptb.py: order 5, embeddings 128, tanh layer 256, AdamW."""
    tok, stream = ptb_stream()
    torch.manual_seed(1337)
    model = NPLM(NPLMConfig(vocab_size=tok.vocab_size, order=5, d_embed=128, hidden=256, dropout=0.3)).train()
    config = TrainConfig(lr=2e-3, min_lr=1e-4, warmup_steps=200, weight_decay=0.1, grad_clip=1.0, batch_size=32,
                         bptt=32)
    return in_order_step(model, config, stream)


CASES = {  # name: (what, build, steps per block)
    "lstm-ptb": ("PTB LSTM, 2 x 200, V = 10,000, batch 20 x 20", lambda: lstm_step()[0], 20),
    "nplm-ptb": ("PTB NPLM, 4 words x 128 -> 256, V = 10,000, batch 32 x 32", nplm_step, 10),
    "gpt-gpt2-vocab": ("GPT 4 x 128, context 64, batch 12, GPT-2 vocabulary (V = 50,257)",
                       lambda: gpt_step("gpt2")[0], 5),
    "gpt-char": ("GPT 4 x 128, context 64, batch 12, characters (V = 65)", lambda: gpt_step("char")[0], 20),
}


def timed(step: Callable[[], None], steps: int, fused: bool) -> float:
    base.FUSED_MIN_VOCAB = 0 if fused else sys.maxsize
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return 1000 * (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as lmlab's trainer does
    load_before = os.getloadavg()[0]
    rows = []
    for name, (what, build, steps) in CASES.items():
        step = build()
        for fused in (False, True):
            timed(step, 2, fused)
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for fused in ((False, True) if repeat % 2 == 0 else (True, False)):
                times[fused].append(timed(step, steps, fused))
        ratios = [plain / fused for plain, fused in zip(times[False], times[True])]
        rows.append({"case": name, "what": what, "plain_ms": statistics.median(times[False]),
                     "fused_ms": statistics.median(times[True]), "speed_up": statistics.median(ratios),
                     "range": [min(ratios), max(ratios)], "times_ms": {"plain": times[False], "fused": times[True]}})
    report = {"repeats": args.repeats, "threads": args.threads, "rows": rows, "vocab_block": base.VOCAB_BLOCK,
              "load_average": [load_before, os.getloadavg()[0]],
              "machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                          "python": platform.python_version()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "softmax_layer.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Training step with the fused softmax layer against F.linear + lm_loss, {args.threads} threads, "
             f"{args.repeats} alternating blocks each, blocks of {base.VOCAB_BLOCK} vocabulary rows, CPU "
             f"{report['machine']['cpu_capability']}, load average {load_before:.1f} before.\n",
             "| case | model | plain ms/step | fused ms/step | speed-up (median, range) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['what']} | {r['plain_ms']:.1f} | {r['fused_ms']:.1f} | "
                     f"{r['speed_up']:.3f}x ({r['range'][0]:.2f}-{r['range'][1]:.2f}) |")
    (RESULTS / "softmax_layer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
