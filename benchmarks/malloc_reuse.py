"""What keeping freed memory for reuse (lmlab/runtime.py) buys a training step.

Trains the first `--steps` steps of benchmarks/ptb.py's LSTM recipe (Zaremba's small LSTM on PTB:
logits of 400 x 10,000 floats every step) with lmlab's trainer, once with glibc's default malloc
settings and once with `keep_freed_memory`, each in a fresh process (the setting is process-wide),
alternating `--repeats` times so load from other processes hits both alike. The ratio is the median
over repeats of the default's time per step over lmlab's. Both runs must end at the same loss.

    python benchmarks/malloc_reuse.py [--steps 300] [--repeats 3] [--threads 2]

Writes benchmarks/results/malloc_reuse.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def one_run(reuse: bool, steps: int, threads: int, out: str) -> dict:
    """Runs in a fresh process (see main): train `steps` steps and report the time per step."""
    import torch

    import lmlab.train.trainer as trainer
    import ptb
    from lmlab.train import train

    if not reuse:
        trainer.keep_freed_memory = lambda: False
    torch.set_num_threads(threads)
    family, model, recipe = ptb.RECIPES["lstm"]
    recipe = {k: v for k, v in recipe.items() if k != "epochs"}
    val = Path(out).parent / "valid.txt"  # a short validation split: the end-of-run score is not the subject
    val.write_text("".join((ptb.DATA / "ptb.valid.txt").read_text(encoding="utf-8").splitlines(True)[:40]))
    options = dict(out=out, val_data=str(val), model=family, tokenizer="word", tokenizer_options=dict(ptb.WORD),
                   model_overrides=dict(model), progress=False)
    train(str(ptb.DATA / "ptb.train.txt"), train_overrides={**recipe, "max_steps": 10}, **options)  # warm up
    started = time.perf_counter()
    result = train(out=out, resume=True, train_overrides={"max_steps": 10 + steps}, progress=False)
    return {"ms_per_step": 1000 * (time.perf_counter() - started) / steps, "train_loss": result.train_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=["default", "reuse"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one == "reuse", args.steps, args.threads, args.out)))
        return
    runs: dict[str, list[dict]] = {"default": [], "reuse": []}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for mode in (["default", "reuse"] if repeat % 2 == 0 else ["reuse", "default"]):
            with tempfile.TemporaryDirectory() as tmp:
                line = subprocess.run([sys.executable, __file__, "--one", mode, "--out", f"{tmp}/run",
                                       "--steps", str(args.steps), "--threads", str(args.threads)],
                                      check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            runs[mode].append(json.loads(line))
            print(mode, runs[mode][-1], flush=True)
    losses = {r["train_loss"] for rs in runs.values() for r in rs}
    ratios = [d["ms_per_step"] / r["ms_per_step"] for d, r in zip(runs["default"], runs["reuse"])]
    report = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "runs": runs,
              "speedup_median": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
              "same_loss": len(losses) == 1, "load_average": [load_before, os.getloadavg()[0]]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "malloc_reuse.json").write_text(json.dumps(report, indent=2) + "\n")
    ms = {mode: statistics.median(r["ms_per_step"] for r in rs) for mode, rs in runs.items()}
    table = (f"PTB LSTM (Zaremba small) training steps, {args.threads} threads, {args.steps} steps x {args.repeats} "
             f"alternated repeats, load average {load_before:.1f} before.\n\n"
             "| malloc | ms/step (median) |\n|---|---:|\n"
             f"| glibc defaults | {ms['default']:.1f} |\n| lmlab (`keep_freed_memory`) | {ms['reuse']:.1f} |\n\n"
             f"Keeping freed blocks: **{report['speedup_median']:.2f}x** per step (range "
             f"{min(ratios):.2f}-{max(ratios):.2f}); same training loss: {report['same_loss']}.\n")
    (RESULTS / "malloc_reuse.md").write_text(table)
    print(table)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
