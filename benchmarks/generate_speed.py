"""Decoding speed: lmlab against Hugging Face `generate` on the same GPT-2-124M-shaped weights.

Weights: `GPT2LMHeadModel(GPT2Config())` randomly initialised with a fixed seed (offline: nothing
is downloaded), saved with `save_pretrained` and read by both sides from that directory:
`GPT2LMHeadModel.from_pretrained` and `lmlab.load(path, dtype=...)`. Prompts: 32-token windows of
WikiText-2 validation text. Each configuration (batch 1 and 8, greedy and beam 4) generates exactly
`--new-tokens` tokens per prompt on both sides (min_new_tokens = max_new_tokens), counted as
prompts x new tokens (beams are not counted). The implementations run interleaved, in a rotating
order, `--repeats` times; a ratio is the median over repeats of HF's time / lmlab's time in the
same repeat, so load from other processes on the machine hits both sides alike. Both sides run
in this one process with OMP_WAIT_POLICY=PASSIVE (unless the environment sets it): on a machine
shared with other busy processes, OpenMP threads that spin at the end of each parallel region
wait out a neighbour's time slice (~4-8 ms per region, measured here), which times the neighbours,
not the code. The load average before and after is recorded.

Each side runs in its fastest dtype: a short probe times HF in float32 and bfloat16 (on CPUs
without native bf16 units bfloat16 is far slower) and the faster one is HF's row. lmlab runs
float32 (its exact-parity mode: the tokens are checked against HF's) and int8 (int8 weights and
matmuls, activations quantized per row on the fly: lmlab/models/quantize.py). The quality cost
of int8 is measured against lmlab float32: next-token agreement and KL divergence over 2,000 WikiText-2 tokens, perplexity,
and greedy agreement over the generated tokens, on the random GPT-2 weights (whose predictions are
nearly uniform, so their figures are a stress test, not a quality estimate) and on a tiny GPT
trained here on Tiny Shakespeare (char level, a few hundred steps).

    python benchmarks/generate_speed.py [--threads 2] [--repeats 3] [--new-tokens 128] [--skip-trained]
    python benchmarks/generate_speed.py --quick   # batch 1 greedy, 32 tokens: checks that everything runs

Writes benchmarks/results/generate_speed.{json,md} (with --quick: generate_speed_quick.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see the docstring

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402

import lmlab  # noqa: E402
from lmlab.data import TokenStream  # noqa: E402
from lmlab.evaluate import perplexity  # noqa: E402
from lmlab.tokenize import GPT2Tokenizer  # noqa: E402
from lmlab.train import train  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
SEED = 1234
PROMPT_TOKENS = 32
EVAL_TOKENS = 2000
CONFIGS = [(1, 1), (8, 1), (1, 4), (8, 4)]  # (prompts, beams)
TINY_MODEL = dict(n_layer=4, n_head=4, d_model=128, context_len=64, dropout=0.0)
TINY_TRAIN = dict(batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=50, weight_decay=0.1, grad_clip=1.0)


# --- the two sides ------------------------------------------------------------------------------

def build_weights(directory: Path) -> None:
    torch.manual_seed(SEED)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(directory)


def load_hf(directory: Path, dtype: str) -> transformers.GPT2LMHeadModel:
    return transformers.GPT2LMHeadModel.from_pretrained(directory, dtype=getattr(torch, dtype)).eval()


def hf_runner(model: transformers.GPT2LMHeadModel, prompts: list[list[int]], beams: int, new_tokens: int,
              eos: int) -> Callable[[], list[list[int]]]:
    ids = torch.tensor(prompts)  # equal lengths: no padding
    options = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, num_beams=beams, pad_token_id=eos, eos_token_id=eos)

    def run() -> list[list[int]]:
        with torch.inference_mode():
            return model.generate(ids, **options)[:, ids.shape[1]:].tolist()
    return run


def lmlab_runner(bundle: Any, prompts: list[list[int]], beams: int, new_tokens: int) -> Callable[[], list[list[int]]]:
    def run() -> list[list[int]]:
        output = bundle.generate(prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 num_beams=beams)
        return [sequence.token_ids for sequence in output.sequences]
    return run


def timed(run: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    started = time.perf_counter()
    tokens = run()
    return time.perf_counter() - started, tokens


def measure(runners: dict[str, Callable[[], list[list[int]]]], repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Wall times per implementation over `repeats` interleaved rounds (order rotating), and the tokens."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    outputs = {}
    names = list(runners)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            seconds, outputs[name] = timed(runners[name])
            times[name].append(seconds)
            print(f"    {name:<16} {seconds:7.2f} s", flush=True)
    return times, outputs


# --- quality of int8 against float32 ------------------------------------------------------------

def agreement(reference: list[list[int]], other: list[list[int]]) -> dict[str, float]:
    """Positional agreement of generated tokens, and how many tokens match before the first difference."""
    same = sum(a == b for ref, oth in zip(reference, other) for a, b in zip(ref, oth))
    total = sum(len(ref) for ref in reference)
    prefixes = []
    for ref, oth in zip(reference, other):
        n = next((i for i, (a, b) in enumerate(zip(ref, oth)) if a != b), min(len(ref), len(oth)))
        prefixes.append(n)
    return {"token_agreement": same / max(total, 1), "mean_tokens_before_first_difference": statistics.mean(prefixes),
            "sequences_identical": sum(ref == oth for ref, oth in zip(reference, other)), "sequences": len(reference)}


def teacher_forced(reference: Any, other: Any, ids: list[int]) -> dict[str, float]:
    """Next-token argmax agreement and mean KL(reference || other) over windows of `ids`."""
    context = reference.model.context_len
    agree = kl = count = 0.0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, context):
            window = torch.tensor(ids[start:start + context + 1])[None]
            if window.shape[1] < 2:
                break
            log_p = F.log_softmax(reference.model(window[:, :-1])[0].float(), dim=-1)
            log_q = F.log_softmax(other.model(window[:, :-1])[0].float(), dim=-1)
            agree += (log_p.argmax(-1) == log_q.argmax(-1)).sum().item()
            kl += (log_p.exp() * (log_p - log_q)).sum().item()
            count += log_p.shape[1]
    return {"next_token_agreement": agree / count, "mean_kl_nats": kl / count, "positions": int(count)}


def perplexities(bundles: dict[str, Any], ids: list[int], text_bytes: int) -> dict[str, float]:
    return {name: perplexity(b.model, b.tokenizer, stream=TokenStream(ids), text_bytes=text_bytes).perplexity
            for name, b in bundles.items()}


def tiny_trained_quality(workdir: Path, steps: int, new_tokens: int) -> dict:
    """Train a tiny char-level GPT on Tiny Shakespeare, then compare its int8 and float32 modes."""
    print(f"training a tiny GPT for {steps} steps ...", flush=True)
    result = train(out=workdir / "tiny", tokenizer="char", model_overrides=TINY_MODEL,
                   train_overrides={**TINY_TRAIN, "max_steps": steps, "eval_every": steps, "seed": SEED},
                   progress=False)
    exact, fast = lmlab.load(workdir / "tiny"), lmlab.load(workdir / "tiny", dtype="int8")
    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    held_out = text[-20000:]  # the end of the file lies in the validation split
    ids = exact.tokenizer.encode(held_out)
    prompts = [ids[i:i + PROMPT_TOKENS] for i in range(0, 8 * 1000, 1000)]
    greedy = {}
    for name, bundle in (("float32", exact), ("int8", fast)):
        greedy[name] = lmlab_runner(bundle, prompts, 1, new_tokens)()
    return {"model": TINY_MODEL, "steps": steps, "val_loss": result.val_loss,
            "perplexity": perplexities({"float32": exact, "int8": fast}, ids, len(held_out.encode("utf-8"))),
            **teacher_forced(exact, fast, ids), "greedy": agreement(greedy["float32"], greedy["int8"])}


# --- report -------------------------------------------------------------------------------------

def summarize(times: dict[str, list[float]], tokens: int, peer: str) -> dict[str, dict]:
    rows = {}
    for name, seconds in times.items():
        ratios = [p / s for p, s in zip(times[peer], seconds)]
        rows[name] = {"tokens_per_s_median": tokens / statistics.median(seconds), "tokens_per_s_best": tokens / min(seconds),
                      "seconds": seconds, "vs_hf_median": statistics.median(ratios),
                      "vs_hf_range": [min(ratios), max(ratios)]}
    return rows


def markdown(report: dict) -> str:
    lines = [f"Decoding {report['new_tokens']} new tokens per prompt, GPT-2-124M shape (random weights), "
             f"{report['machine']['threads']} threads (OMP_WAIT_POLICY={report['machine']['omp_wait_policy']}), "
             f"{report['repeats']} interleaved repeats, load average "
             f"{'/'.join(f'{x:.1f}' for x in report['machine']['load_average_1min_before_after'])} before/after. "
             f"HF's dtype: {report['hf_dtype']} (probe below).", "",
             "| prompts | beams | implementation | tok/s (median) | tok/s (best) | x HF (median, range) | same tokens as HF |",
             "|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        for name, row in run["results"].items():
            low, high = row["vs_hf_range"]
            same = run["same_as_hf"].get(name, "")
            lines.append(f"| {run['prompts']} | {run['beams']} | {name} | {row['tokens_per_s_median']:.1f} | "
                         f"{row['tokens_per_s_best']:.1f} | {row['vs_hf_median']:.2f} ({low:.2f}-{high:.2f}) | {same} |")
    probe = report["dtype_probe"]
    lines += ["", f"dtype probe (batch 1, greedy, {probe['new_tokens']} tokens, tok/s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in probe["tokens_per_s"].items())]
    q = report["quality"]["random_gpt2"]
    lines += ["", "Quality cost of int8 (against lmlab float32):", "",
              "| model | next-token agreement | mean KL (nats) | perplexity float32 | perplexity int8 | "
              "greedy token agreement | tokens before first difference (mean) |", "|---|---|---|---|---|---|---|"]
    rows = [("GPT-2 shape, random weights", q)]
    if "tiny_trained" in report["quality"]:
        t = report["quality"]["tiny_trained"]
        rows.append((f"tiny GPT trained {t['steps']} steps (char, val loss {t['val_loss']:.3f})", t))
    for label, r in rows:
        g = r["greedy"]
        lines.append(f"| {label} | {r['next_token_agreement']:.4f} | {r['mean_kl_nats']:.2e} | "
                     f"{r['perplexity']['float32']:.3f} | {r['perplexity']['int8']:.3f} | {g['token_agreement']:.3f} | "
                     f"{g['mean_tokens_before_first_difference']:.1f} of {report['new_tokens']} |")
    lines += ["", f"Random-weight greedy agreement is over the greedy outputs of {q['greedy']['sequences']} "
              "prompt(s) above; perplexity over the first 2,000 GPT-2 tokens of WikiText-2 validation. Random weights "
              "give nearly uniform predictions whose top tokens differ by hundredths of a logit, so any rounding "
              "flips them: read their agreement as a worst case."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--tiny-steps", type=int, default=600, help="training steps of the tiny trained GPT")
    parser.add_argument("--skip-trained", action="store_true", help="no tiny trained model in the quality section")
    parser.add_argument("--quick", action="store_true", help="batch 1 greedy, 32 tokens, 2 repeats, 150 tiny steps")
    args = parser.parse_args()
    configs = CONFIGS
    if args.quick:
        args.new_tokens, args.repeats, args.tiny_steps, configs = 32, 2, 150, [(1, 1)]
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)

    load_before = os.getloadavg()
    tokenizer = GPT2Tokenizer()
    text = (DATA / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:40000]
    ids = tokenizer.encode(text)
    eval_ids = ids[:EVAL_TOKENS]
    prompts = [ids[i * 400: i * 400 + PROMPT_TOKENS] for i in range(8)]
    eos = tokenizer.eot_id

    with tempfile.TemporaryDirectory(prefix="lmlab-genspeed-") as tmp:
        workdir = Path(tmp)
        build_weights(workdir / "gpt2")
        bundles = {"lmlab float32": lmlab.load(workdir / "gpt2"), "lmlab int8": lmlab.load(workdir / "gpt2", dtype="int8")}

        probe_tokens = 8
        probe = {f"HF {d}": hf_runner(load_hf(workdir / "gpt2", d), prompts[:1], 1, probe_tokens, eos)
                 for d in ("float32", "bfloat16")}
        probe["lmlab bfloat16"] = lmlab_runner(lmlab.load(workdir / "gpt2", dtype="bfloat16"), prompts[:1], 1, probe_tokens)
        probe.update({name: lmlab_runner(b, prompts[:1], 1, probe_tokens) for name, b in bundles.items()})
        print("dtype probe:", flush=True)
        for run in probe.values():
            run()  # warm up
        probe_times, _ = measure(probe, 1)
        probe_speed = {name: probe_tokens / t[0] for name, t in probe_times.items()}
        hf_dtype = max(("float32", "bfloat16"), key=lambda d: probe_speed[f"HF {d}"])
        hf = load_hf(workdir / "gpt2", hf_dtype)
        del probe

        runs = []
        for n_prompts, beams in configs:
            print(f"{n_prompts} prompt(s), {beams} beam(s), {args.new_tokens} new tokens:", flush=True)
            chosen = prompts[:n_prompts]
            runners = {f"HF {hf_dtype}": hf_runner(hf, chosen, beams, args.new_tokens, eos)}
            runners.update({name: lmlab_runner(b, chosen, beams, args.new_tokens) for name, b in bundles.items()})
            for name, run in runners.items():  # warm up: a few tokens each
                (hf_runner(hf, chosen, beams, 4, eos) if name.startswith("HF") else
                 lmlab_runner(bundles[name], chosen, beams, 4))()
            times, outputs = measure(runners, args.repeats)
            peer = f"HF {hf_dtype}"
            counts = {name: sum(len(t) for t in out) for name, out in outputs.items()}
            expected = n_prompts * args.new_tokens
            if any(c != expected for c in counts.values()):
                raise SystemExit(f"token counts differ from {expected}: {counts}")
            runs.append({"prompts": n_prompts, "beams": beams, "tokens": expected,
                         "results": summarize(times, expected, peer),
                         "same_as_hf": {name: "yes" if out == outputs[peer] else
                                        f"{agreement(outputs[peer], out)['token_agreement']:.1%} of tokens"
                                        for name, out in outputs.items() if name != peer},
                         "int8_vs_float32": agreement(outputs["lmlab float32"], outputs["lmlab int8"])})

        greedy_run = next((r for r in runs if r["beams"] == 1 and r["prompts"] == max(c[0] for c in configs)))
        text_bytes = len(tokenizer.decode_bytes(eval_ids))
        quality = {"random_gpt2": {"perplexity": perplexities({"float32": bundles["lmlab float32"],
                                                               "int8": bundles["lmlab int8"]}, eval_ids, text_bytes),
                                   **teacher_forced(bundles["lmlab float32"], bundles["lmlab int8"], eval_ids),
                                   "greedy": greedy_run["int8_vs_float32"]}}
        if not args.skip_trained:
            quality["tiny_trained"] = tiny_trained_quality(workdir, args.tiny_steps, args.new_tokens)

    report = {"new_tokens": args.new_tokens, "repeats": args.repeats, "hf_dtype": hf_dtype,
              "dtype_probe": {"new_tokens": probe_tokens, "tokens_per_s": probe_speed}, "runs": runs,
              "quality": quality,
              "machine": {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                          "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
                          "torch": torch.__version__, "transformers": transformers.__version__,
                          "python": platform.python_version()}}
    stem = "generate_speed_quick" if args.quick else "generate_speed"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
