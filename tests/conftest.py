"""Shared fixtures: the shared real-data folder, a tiny text corpus, and one torch thread per test.

The machine is shared and small, so every test keeps torch to one thread (no oversubscription)
and uses tiny models. Test modules may define fixtures of their own; these names stay out of
their way (`shared_data`, `tiny_text`, `tiny_corpus`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Subprocesses started by tests (python -m lmlab ...) inherit these.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test runs torch on one thread, whatever an earlier test did."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (../shared/data from the project root); skip if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def make_tiny_text(n_chars: int = 20_000) -> str:
    """Deterministic English-like text: words, spaces, punctuation and newlines, about `n_chars` long."""
    words = ("the quick brown fox jumps over a lazy dog while seven wise kings sing of old "
             "ships and silver rain upon the hills where no one walks at night").split()
    lines, length, i = [], 0, 0
    while length < n_chars:
        line = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(5 + i % 6))
        line = line.capitalize() + (".", ",", "!", "?", ";")[i % 5]
        lines.append(line)
        length += len(line) + 1
        i += 1
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """About 20 KB of plain text (as a string)."""
    return make_tiny_text()


@pytest.fixture
def tiny_corpus(tmp_path: Path, tiny_text: str) -> Path:
    """A ~20 KB UTF-8 text file in the test's temporary folder."""
    path = tmp_path / "corpus.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path
