"""Atomic file writes: write to a temporary file in the same directory, fsync, rename.

A crash at any moment leaves either the old file or the new one, never half of one; and a folder
lmlab fills is one that held nothing before (`check_new_folder`).
Below every layer, like errors.py; checkpoint layout lives in io/checkpoint.py.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from lmlab.errors import LmlabError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` to produce the file, then move it over `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


_TEMPORARY = re.compile(r"\.[^/]+\.[a-z0-9_]{8}\.tmp")  # what atomic_write's mkstemp names look like


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that a process killed in the middle of `atomic_write` left in
    `directory` and its subfolders; returns them. Call it only where no write is in progress."""
    removed = []
    for path in Path(directory).rglob(".*.tmp"):
        if _TEMPORARY.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_new_folder(path: str | os.PathLike) -> None:
    """LmlabError unless `path` can become a folder for lmlab to fill: it does not exist yet or is an
    empty folder, and lies under folders. lmlab never writes over, or cleans up among, files it did
    not make."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LmlabError(f"out {path} is a file; give a new folder", params=("out",))
    if path.is_dir() and any(path.iterdir()):
        raise LmlabError(f"out {path} is not an empty folder: it already holds files; give a new or empty "
                         "folder (lmlab never writes among files it did not make)", params=("out",))
    if any(parent.exists() and not parent.is_dir() for parent in path.parents):
        raise LmlabError(f"out {path} lies under a file, not a folder; give a folder path", params=("out",))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
