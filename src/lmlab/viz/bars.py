"""Bar charts (e.g. bits per byte of several runs), saved as PNG or SVG by suffix, atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lmlab.atomic import atomic_write


def plot_bars(labels: Sequence[str], values: Sequence[float], path: str | Path, *, ylabel: str,
              title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 2), 4), dpi=100)
    bars = ax.bar(range(len(values)), values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
