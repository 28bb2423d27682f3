"""The decoding engine before and after a change, alternated in one run on the same machine.

`git archive` puts the source tree of `--before` (default: the commit before issue 11's reshape)
in a temporary folder; the same script then decodes with each tree in turn, each run in its own
process (PYTHONPATH chooses the tree), `--rounds` times alternating, on a GPT-2-124M-shaped GPT
with random weights (seed fixed): 32 greedy tokens after a 32-token prompt at batch 1, the best of
3 per process. Alternating in one run is what makes the two figures comparable on a machine
whose speed moves with its neighbours' load.

    python benchmarks/engine_before_after.py [--before 7824a84] [--rounds 5]

Writes benchmarks/results/engine_before_after.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

# Runs inside each tree: the API of the engine at that commit decides which call is made.
DECODE = r"""
import sys, time, torch
torch.set_num_threads(2)
torch.manual_seed(0)
from lmlab.models.gpt import GPT, GPTConfig
import lmlab.generate as g
model = GPT(GPTConfig(vocab_size=50257, context_len=1024, n_layer=12, n_head=12, d_model=768,
                      activation="gelu_tanh")).eval()
prompt = list(range(100, 132))
config = g.GenerationConfig(max_new_tokens=32, min_new_tokens=32, do_sample=False)
if hasattr(g, "generate_batch"):  # before: the batch decoder
    run = lambda: g.generate_batch(model, [prompt], config)
else:  # after: the one loop
    run = lambda: g.generate(model, [prompt], config)
run()
best = 1e9
for _ in range(3):
    started = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - started)
print(32 / best)
"""


def tree_at(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True)
    with tarfile.open(fileobj=__import__("io").BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def tokens_per_s(src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", DECODE], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="7824a84")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    load_before = os.getloadavg()[0]
    speeds: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="lmlab-before-") as tmp:
        trees = {"before": tree_at(args.before, Path(tmp)), "after": ROOT / "src"}
        for round_ in range(args.rounds):
            for name in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                speeds[name].append(tokens_per_s(trees[name]))
                print(f"  {name:<6} {speeds[name][-1]:6.1f} tok/s", flush=True)
    ratios = [a / b for a, b in zip(speeds["after"], speeds["before"])]
    report = {"before": args.before, "after": head, "rounds": args.rounds, "tokens_per_s": speeds,
              "median": {k: statistics.median(v) for k, v in speeds.items()},
              "after_over_before_median": statistics.median(ratios), "range": [min(ratios), max(ratios)],
              "load_average_1min_before_after": [load_before, os.getloadavg()[0]]}
    table = (f"GPT-2-124M shape, batch 1, 32 greedy tokens, 2 threads, {args.rounds} alternating rounds (best of 3 "
             f"per process), load average {load_before:.1f}/{os.getloadavg()[0]:.1f} before/after.\n\n"
             "| engine | tok/s (median) | runs |\n|---|---|---|\n"
             + "".join(f"| {name} ({rev}) | {report['median'][name]:.1f} | {', '.join(f'{s:.1f}' for s in speeds[name])} |\n"
                       for name, rev in (("before", args.before), ("after", head)))
             + f"\nafter / before: {report['after_over_before_median']:.3f} (median; range "
               f"{min(ratios):.3f}-{max(ratios):.3f})\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_before_after.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "engine_before_after.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
