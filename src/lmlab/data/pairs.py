"""Parallel text for translation: aligned sentence pairs in, padded batches of similar lengths out.

- `read_pairs(source_file, target_file)` reads two aligned files, line i of one translating line
  i of the other; `read_tsv(path)` reads one file of `source<TAB>target` lines. Both check what
  a translation corpus must be (the same number of lines, no empty side) with messages that say
  which line is wrong.
- `encode_pairs` turns the text into token ids (each side ending with the end-of-text id), and
  drops or refuses pairs longer than a limit (`max_len`).
- `PairData` cuts the pairs into batches of similar lengths, so that padding is small: every
  epoch shuffles the pairs (from the seed and the epoch number), sorts each pool of
  `POOL_BATCHES` batches by length, and shuffles the batches. `batch(i)` gives batch i of that
  endless sequence directly, so a run resumes at any batch exactly.

A batch is a dict of tensors: `source` (B, S) and `source_mask` (B, S) (False at padding on the
right), `ids` (B, T) (the target after the start id, which is the end-of-text id) and `targets`
(B, T) (the target and the end-of-text id, -1 at padding). Tokenizers are lmlab/tokenize's; this
module only takes their `encode` functions.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lmlab.errors import LmlabError, LmlabNotice

POOL_BATCHES = 100  # batches sorted by length together: larger pools pad less, smaller ones shuffle more


def _read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"{path} is not a file; give a text file with one sentence a line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise LmlabError(f"{path} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv -f LATIN1 -t UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.rstrip("\r") for line in lines]


def check_pairs(sources: Sequence[str], targets: Sequence[str], where: str) -> list[tuple[str, str]]:
    """The pairs, stripped, or an error naming the first line with an empty side.

    >>> check_pairs([" a b "], ["c"], "x")
    [('a b', 'c')]
    """
    pairs = []
    for line, (source, target) in enumerate(zip(sources, targets), start=1):
        source, target = source.strip(), target.strip()
        if not source or not target:
            side = "source" if not source else "target"
            raise LmlabError(f"{where}: line {line} has an empty {side} side; every line must hold a sentence "
                             "on both sides (remove the line from both files)")
        pairs.append((source, target))
    if not pairs:
        raise LmlabError(f"{where} holds no sentence pairs")
    return pairs


def read_pairs(source_file: str | Path, target_file: str | Path) -> list[tuple[str, str]]:
    """Two aligned files: line i of `target_file` translates line i of `source_file`."""
    sources, targets = _read_lines(source_file), _read_lines(target_file)
    if len(sources) != len(targets):
        raise LmlabError(f"{source_file} has {len(sources):,} lines but {target_file} has {len(targets):,}; "
                         "aligned files must have one line per sentence pair")
    return check_pairs(sources, targets, f"{source_file} / {target_file}")


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """One file of `source<TAB>target` lines (further columns, as Anki exports have, are ignored)."""
    lines = _read_lines(path)
    split = [line.split("\t") for line in lines]
    for line, columns in enumerate(split, start=1):
        if len(columns) < 2:
            raise LmlabError(f"{path}: line {line} has no tab; each line must be source<TAB>target")
    return check_pairs([c[0] for c in split], [c[1] for c in split], str(path))


def split_pairs(pairs: Sequence[tuple[str, str]], val_size: int, test_size: int = 0, seed: int = 0
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """A fixed (seeded) split into train, validation and test pairs of the sizes asked.

    >>> [len(part) for part in split_pairs([("a", "b")] * 10, val_size=2, test_size=3)]
    [5, 2, 3]
    """
    if val_size + test_size >= len(pairs):
        raise LmlabError(f"cannot hold out {val_size + test_size} of {len(pairs)} pairs; use a smaller split")
    order = np.random.default_rng(seed).permutation(len(pairs))
    chosen = [pairs[i] for i in order]
    held = val_size + test_size
    return chosen[held:], chosen[:val_size], chosen[val_size:held]


@dataclass
class EncodedPairs:
    sources: list[np.ndarray]  # each ends with the end-of-text id
    targets: list[np.ndarray]
    dropped: int  # pairs longer than max_len, left out


def encode_pairs(pairs: Sequence[tuple[str, str]], encode_source: Callable[[str], list[int]], source_end: int,
                 encode_target: Callable[[str], list[int]], target_end: int, *, limit: int,
                 max_len: int | None = None, where: str = "the data") -> EncodedPairs:
    """Token ids of every pair, each side followed by its end-of-text id.

    A side longer than `limit` tokens (the model's longest source or target) is an error that says
    how many pairs are that long, unless `max_len` (<= limit) is given: pairs with a side longer
    than it are then left out, and a notice says how many.
    """
    if max_len is not None and (not isinstance(max_len, int) or not 1 <= max_len <= limit):
        raise LmlabError(f"max_len must be between 1 and the model's limit of {limit} tokens, got {max_len!r}",
                         params=("max_len",))
    bound = limit if max_len is None else max_len
    sources, targets, long = [], [], []
    for line, (source, target) in enumerate(pairs, start=1):
        s = np.asarray([*encode_source(source), source_end], dtype=np.int64)
        t = np.asarray([*encode_target(target), target_end], dtype=np.int64)
        if max(len(s), len(t)) > bound:
            long.append((line, max(len(s), len(t))))
            continue
        sources.append(s)
        targets.append(t)
    if long and max_len is None:
        line, length = max(long, key=lambda item: item[1])
        raise LmlabError(f"{len(long):,} pair(s) of {where} are longer than the model's {limit} tokens (the "
                         f"longest, line {line}, has {length}); give max_len to leave them out, or a larger "
                         "context_len", params=("max_len", "context_len"))
    if long:
        warnings.warn(LmlabNotice(f"left out {len(long):,} of {len(pairs):,} pairs of {where} longer than "
                                  f"max_len {max_len} tokens"), stacklevel=2)
    if not sources:
        raise LmlabError(f"no pair of {where} is at most {bound} tokens long", params=("max_len",))
    return EncodedPairs(sources, targets, len(long))


def pad_batch(sources: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None, start_id: int
              ) -> dict[str, torch.Tensor]:
    """Sources right-padded (0 under a False mask); targets as decoder input `ids` (the start id,
    then the target without its end) and `targets` (-1 at padding).

    >>> batch = pad_batch([np.array([5, 0]), np.array([6, 7, 0])], [np.array([8, 0])], start_id=0)
    >>> batch["source"].tolist(), batch["source_mask"].int().tolist()
    ([[5, 0, 0], [6, 7, 0]], [[1, 1, 0], [1, 1, 1]])
    >>> batch["ids"].tolist(), batch["targets"].tolist()
    ([[0, 8]], [[8, 0]])
    """
    width = max(len(s) for s in sources)
    source = torch.zeros(len(sources), width, dtype=torch.long)
    mask = torch.zeros(len(sources), width, dtype=torch.bool)
    for row, ids in enumerate(sources):
        source[row, :len(ids)] = torch.from_numpy(ids)
        mask[row, :len(ids)] = True
    batch = {"source": source, "source_mask": mask}
    if targets is not None:
        length = max(len(t) for t in targets)
        ids = torch.zeros(len(targets), length, dtype=torch.long)
        out = torch.full((len(targets), length), -1, dtype=torch.long)
        for row, target in enumerate(targets):
            target = torch.from_numpy(target)
            ids[row, 0] = start_id
            ids[row, 1:len(target)] = target[:-1]
            out[row, :len(target)] = target
        batch.update(ids=ids, targets=out)
    return batch


class PairData:
    """Encoded pairs and their batches (see the module docstring); `start_id` begins every target."""

    def __init__(self, encoded: EncodedPairs, start_id: int, seed: int = 0):
        self.sources, self.targets = encoded.sources, encoded.targets
        self.dropped = encoded.dropped
        self.start_id = start_id
        self.seed = seed
        self._epoch: tuple[int, int, list[np.ndarray]] | None = None  # (epoch, batch_size, its batches)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def target_tokens(self) -> int:
        return sum(len(t) for t in self.targets)

    def num_batches(self, batch_size: int) -> int:
        """Batches in one epoch.

        >>> data = PairData(EncodedPairs([np.array([1])] * 5, [np.array([2])] * 5, 0), start_id=0)
        >>> data.num_batches(2)
        3
        """
        return math.ceil(len(self) / batch_size)

    def _epoch_batches(self, epoch: int, batch_size: int) -> list[np.ndarray]:
        if self._epoch is None or self._epoch[:2] != (epoch, batch_size):
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self))
            lengths = np.array([len(s) + len(t) for s, t in zip(self.sources, self.targets)])
            pool = POOL_BATCHES * batch_size
            batches = []
            for start in range(0, len(order), pool):
                chunk = order[start:start + pool]
                chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
                batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
            self._epoch = (epoch, batch_size, batches)
        return self._epoch[2]

    def batch(self, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        """Batch `index` (counted over all epochs) of the shuffled, length-sorted sequence."""
        epoch, within = divmod(index, self.num_batches(batch_size))
        rows = self._epoch_batches(epoch, batch_size)[within]
        return pad_batch([self.sources[i] for i in rows], [self.targets[i] for i in rows], self.start_id)

    def in_order(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """Every pair once, in batches of similar lengths (for scoring: the order does not matter)."""
        order = np.argsort([len(s) + len(t) for s, t in zip(self.sources, self.targets)], kind="stable")
        return [pad_batch([self.sources[i] for i in order[k:k + batch_size]],
                          [self.targets[i] for i in order[k:k + batch_size]], self.start_id)
                for k in range(0, len(order), batch_size)]
