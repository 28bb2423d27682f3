"""`lmlab compare`: several runs scored on the same text, one table on one honest scale.

Perplexity per token depends on the tokenizer; bits per byte (total negative log2-likelihood over
UTF-8 bytes) does not, so it is the column to compare across char, word and BPE models. The
table is written as markdown and JSON, and drawn as a bar chart. Scoring itself is lmlab.evaluate.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from lmlab.atomic import atomic_write_text
from lmlab.bundle import load
from lmlab.errors import LmlabError
from lmlab.evaluate import perplexity
from lmlab.io.checkpoint import METRICS_FILE
from lmlab.viz.bars import plot_bars


@dataclass(frozen=True)
class ComparisonRow:
    run: str
    family: str
    tokenizer: str
    parameters: int
    train_s: float | None
    perplexity: float
    bits_per_byte: float
    tokens: int
    scored_tokens_per_s: float


def training_seconds(run_dir: Path) -> float | None:
    """Wall time of training, from the last row of metrics.jsonl that records it."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return None
    elapsed = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            elapsed = json.loads(line).get("elapsed_s", elapsed)
        except json.JSONDecodeError:
            continue
    return elapsed


def compare_runs(runs: Sequence[str | Path], text: str) -> list[ComparisonRow]:
    rows = []
    for run in runs:
        bundle = load(run)
        started = time.perf_counter()
        result = perplexity(bundle.model, bundle.tokenizer, text)
        seconds = time.perf_counter() - started
        model = bundle.config.get("model", {})
        rows.append(ComparisonRow(
            run=str(run), family=model.get("family", "?"), tokenizer=bundle.tokenizer.kind,
            parameters=bundle.model.num_parameters(), train_s=training_seconds(Path(run)),
            perplexity=result.perplexity, bits_per_byte=result.bits_per_byte, tokens=result.tokens,
            scored_tokens_per_s=result.tokens / max(seconds, 1e-9)))
    return rows


def markdown_table(rows: Sequence[ComparisonRow]) -> str:
    lines = ["| run | family | tokenizer | parameters | train s | perplexity / token | bits / byte | tokens/s scored |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        train = "-" if r.train_s is None else f"{r.train_s:.1f}"
        lines.append(f"| {r.run} | {r.family} | {r.tokenizer} | {r.parameters:,} | {train} | {r.perplexity:.2f} "
                     f"| {r.bits_per_byte:.4f} | {r.scored_tokens_per_s:,.0f} |")
    return "\n".join(lines) + "\n"


OUTPUT_SUFFIXES = (".md", ".json", ".png")


def output_paths(out_prefix: str | Path) -> list[Path]:
    """PREFIX.md, PREFIX.json and PREFIX.png (a PREFIX given with one of those suffixes loses it)."""
    text = str(out_prefix)
    for suffix in OUTPUT_SUFFIXES:
        text = text.removesuffix(suffix)
    if not Path(text).name:
        raise LmlabError(f"out needs a file name prefix such as results/compare, got {str(out_prefix)!r}",
                         params=("out",))
    return [Path(text + suffix) for suffix in OUTPUT_SUFFIXES]


def _is_comparison(path: Path) -> bool:
    """Whether `path` is a JSON table that `write_comparison` wrote."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and "bits_per_byte" in r for r in rows)


def write_comparison(rows: Sequence[ComparisonRow], out_prefix: str | Path) -> list[Path]:
    """Write PREFIX.md, PREFIX.json and PREFIX.png; returns the paths. Files already there are
    replaced only when they are an earlier comparison (PREFIX.json is one): never a user's own."""
    paths = output_paths(out_prefix)
    existing = [p for p in paths if p.exists()]
    if existing and not _is_comparison(paths[1]):
        raise LmlabError(f"{existing[0]} already exists and is not an lmlab comparison; choose another out",
                         params=("out",))
    atomic_write_text(paths[0], markdown_table(rows))
    atomic_write_text(paths[1], json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    plot_bars([Path(r.run).name for r in rows], [r.bits_per_byte for r in rows], paths[2],
              ylabel="bits per byte (lower is better)", title="lmlab compare")
    return paths
