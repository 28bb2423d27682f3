"""How far a training step is from this CPU's floor: the time of its matrix products alone.

Two runs have a wall-time target in the issues: the Shakespeare GPT of benchmarks/shakespeare_char.py
(nanoGPT's CPU configuration, 2,000 steps; nanoGPT takes 63 s on the issue's AVX-512 CPU) and the
PTB LSTM of benchmarks/ptb.py (Zaremba et al.'s small configuration, 13 epochs; "well under an
hour"). For each, this builds lmlab's model and optimizer and runs the trainer's step (forward,
backward, clipping, optimizer) on real batches. It records one step's matrix products with their
operands: every mm, addmm, bmm and baddbmm, and the fused LSTM layer kernels, forward and
backward. It then times, interleaved, the whole step and those products replayed alone with the same
shapes and strides. A loop that did nothing but these products could not beat the replay, so the
replay times the run's steps is a floor no training loop on this CPU goes under.

A 2048 x 2048 product measures the CPU's sustained fp32 GEMM rate in the same run. The step's
products are small, so they run below that rate.

    python benchmarks/step_floor.py [--steps 30] [--repeats 5] [--threads 2]

Writes benchmarks/results/step_floor.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from lmlab.data import TokenStream, default_corpus_path, read_corpus, split_text
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.models.rnn import RNNConfig, RNNLM
from lmlab.runtime import keep_freed_memory
from lmlab.tokenize import CharTokenizer, WordTokenizer, build_tokenizer
from lmlab.train import TrainConfig
from lmlab.train.trainer import make_optimizer, steps_for_epochs

RESULTS = Path(__file__).resolve().parent / "results"
PTB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
aten = torch.ops.aten
PRODUCTS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}  # any overload, `out=` ones included
LAYER_KERNELS = {aten.mkldnn_rnn_layer, aten.mkldnn_rnn_layer_backward}


class RecordProducts(TorchDispatchMode):
    """Keeps every matrix product (and fused recurrent layer) that runs, with copies of its operands."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in PRODUCTS or func.overloadpacket in LAYER_KERNELS:
            copy = lambda t: torch.empty_strided(t.size(), t.stride(), dtype=t.dtype).copy_(t)  # noqa: E731
            self.calls.append((func, *tree_map_only(torch.Tensor, copy, (args, kwargs))))
        return func(*args, **kwargs)


def product_flops(func: Any, args: tuple) -> int:
    """Floating-point operations of one recorded mm / addmm / bmm / baddbmm (0 for the layer kernels)."""
    if func.overloadpacket in (aten.mm, aten.bmm):
        a, b = args[0], args[1]
    elif func.overloadpacket in (aten.addmm, aten.baddbmm):
        a, b = args[1], args[2]
    else:
        return 0
    batch = a.size(0) if a.dim() == 3 else 1
    return 2 * batch * a.size(-2) * a.size(-1) * b.size(-1)


def gpt_step(tokenizer: str = "char") -> tuple[Callable[[], None], int, str]:
    """The Shakespeare GPT step of benchmarks/shakespeare_char.py, as lmlab's trainer runs it
    (with tokenizer "gpt2": the same model over the GPT-2 vocabulary)."""
    train_text, _ = split_text(read_corpus(default_corpus_path()))
    tok = CharTokenizer.train(train_text) if tokenizer == "char" else build_tokenizer(tokenizer)
    stream = TokenStream(tok.encode_array(train_text))
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=4, n_head=4, d_model=128, context_len=64,
                          dropout=0.0)).train()
    config = TrainConfig(lr=1e-3, min_lr=1e-4, batch_size=12, max_steps=2000, grad_clip=0.0)
    optimizer = make_optimizer(model, config)
    rng = torch.Generator().manual_seed(1337)
    total = torch.zeros(())

    def step() -> None:
        x, y = stream.random_windows(config.batch_size, model.context_len, rng)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total.add_(loss.detach())
    return step, config.max_steps, "Shakespeare GPT (4 x 128, context 64, batch 12)"


def ptb_stream() -> tuple[WordTokenizer, TokenStream]:
    """PTB's training split as benchmarks/ptb.py tokenizes it (its 10k words and <eos>)."""
    text = (PTB / "ptb.train.txt").read_text(encoding="utf-8")
    tok = WordTokenizer.train(text, split_punctuation=False, eos_per_line=True)
    return tok, TokenStream(tok.encode_array(text))


def in_order_step(model: torch.nn.Module, config: TrainConfig, stream: TokenStream) -> Callable[[], None]:
    """The trainer's step for a model read in order: consecutive batches, the state carried across."""
    optimizer = make_optimizer(model, config)
    state: list[Any] = [None]
    index = [0]

    def step() -> None:
        x, y = stream.sequential_batch(index[0], config.batch_size, config.bptt)
        index[0] += 1
        _, loss, carry = model.forward_with_state(x, y, state[0])
        state[0] = tuple(part.detach() for part in carry)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def lstm_step() -> tuple[Callable[[], None], int, str]:
    """The PTB LSTM step of benchmarks/ptb.py (Zaremba et al.'s small configuration)."""
    tok, stream = ptb_stream()
    torch.manual_seed(1337)
    model = RNNLM(RNNConfig(cell="lstm", vocab_size=tok.vocab_size, d_embed=200, hidden=200, layers=2,
                            dropout=0.0, init_scale=0.1)).train()
    config = TrainConfig(optimizer="sgd", lr=20.0, grad_clip=0.25, schedule="step", lr_decay=0.5,
                         lr_decay_start=4, warmup_steps=0, batch_size=20, bptt=20, max_steps=1)
    steps = steps_for_epochs(model, stream, config, 13)
    return in_order_step(model, config, stream), steps, "PTB LSTM (2 x 200, vocab 10,000, unroll 20, batch 20)"


def sustained_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e9


def measure(name_of_run: str, build: Callable[[], tuple[Callable[[], None], int, str]], target_s: float, target: str,
            args: argparse.Namespace) -> dict[str, Any]:
    step, run_steps, what = build()
    for _ in range(3):
        step()
    with RecordProducts() as recorder:
        step()
    calls = recorder.calls
    products = [call for call in calls if call[0].overloadpacket in PRODUCTS]
    kernels = [call for call in calls if call[0].overloadpacket in LAYER_KERNELS]
    flops = sum(product_flops(func, a) for func, a, _ in products)

    def replay(recorded: list[tuple[Any, tuple, dict]]) -> Callable[[], None]:
        def run() -> None:
            for func, a, kw in recorded:
                func(*a, **kw)
        return run
    parts = {"step": step, "products": replay(products), "kernels": replay(kernels)}
    times: dict[str, list[float]] = {name: [] for name in parts}
    rates = []
    names = list(parts)
    for repeat in range(args.repeats):
        for name in names[repeat % 3:] + names[: repeat % 3]:
            parts[name]()
            started = time.perf_counter()
            for _ in range(args.steps):
                parts[name]()
            times[name].append(1000 * (time.perf_counter() - started) / args.steps)
        rates.append(sustained_gflops())
    step_ms, products_ms = statistics.median(times["step"]), statistics.median(times["products"])
    kernels_ms = statistics.median(times["kernels"]) if kernels else 0.0
    floor_ms = products_ms + kernels_ms
    return {"run": name_of_run, "what": what, "run_steps": run_steps, "step_ms": step_ms,
            "products_ms": products_ms, "layer_kernels_ms": kernels_ms, "floor_ms": floor_ms,
            "products": len(products), "layer_kernels": len(kernels), "product_gflop": flops / 1e9,
            "product_gflops_rate": flops / 1e9 / (products_ms / 1000), "sustained_gflops": statistics.median(rates),
            "times_ms": times, "run_s_at_step": step_ms * run_steps / 1000, "floor_s": floor_ms * run_steps / 1000,
            "target_s": target_s, "target": target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as lmlab's trainer does
    load_before = os.getloadavg()[0]
    rows = [measure("gpt", gpt_step, 63.0, "nanoGPT's 63 s (an AVX-512 CPU)", args),
            measure("lstm", lstm_step, 3600.0, "well under an hour", args)]
    report = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "rows": rows,
              "load_average": [load_before, os.getloadavg()[0]],
              "machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                          "python": platform.python_version(), "cpus": os.cpu_count()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "step_floor.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Training step against its matrix products alone, {args.threads} threads, {args.steps} steps x "
             f"{args.repeats} interleaved repeats, CPU {report['machine']['cpu_capability']}, load average "
             f"{load_before:.1f} before.\n",
             "| run | step ms | its products alone ms | its LSTM layer kernels alone ms | floor's share of the step "
             "| products' GFLOP/s (a 2048² product's) | steps in the run | run at this step | floor: products and "
             "kernels alone | target |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        kernels = f"{r['layer_kernels_ms']:.1f}" if r["layer_kernels"] else "-"
        lines.append(f"| {r['what']} | {r['step_ms']:.1f} | {r['products_ms']:.1f} | {kernels} | "
                     f"{r['floor_ms'] / r['step_ms']:.0%} | {r['product_gflops_rate']:.0f} "
                     f"({r['sustained_gflops']:.0f}) | {r['run_steps']:,} | {r['run_s_at_step']:,.0f} s | "
                     f"{r['floor_s']:,.0f} s | {r['target']} |")
    lines.append("\nProducts: every mm, addmm, bmm and baddbmm of one step, forward and backward, replayed with the "
                 "same operands. Layer kernels: the fused LSTM layer, forward and backward. The floor is the two "
                 "together, times the run's steps.")
    (RESULTS / "step_floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
