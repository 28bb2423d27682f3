"""Process-wide settings that make long CPU jobs faster, and torch devices by name.

`keep_freed_memory`: glibc's malloc serves every block above 128 KiB with a fresh mmap and gives it
back to the kernel on free, so a training step that allocates the same large tensors each time
(a word model's logits are 400 x 10,000 floats, 16 MB) pays a page fault per 4 KiB page on every
first write. Raising glibc's mmap and trim thresholds keeps freed blocks in the heap for the next
step: the PTB LSTM's steps run 1.11x faster with it on the project's 2-core machine
(`benchmarks/malloc_reuse.py`). Elsewhere (macOS, Windows, musl) it does nothing.

`torch_device("cuda")`: a device name checked against what this machine has (torch is imported
only when it is called).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 256 << 20  # blocks up to 256 MiB come from the heap and are reused
_TRIM_THRESHOLD = 1 << 30  # up to 1 GiB of free heap is kept for reuse instead of returned


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed large blocks instead of unmapping them; True if it took.
    Safe to call any number of times, and a no-op outside Linux with glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def torch_device(name: str) -> "torch.device":
    """The torch device called `name` ("cpu", "cuda", "cuda:1", "mps"), checked: a malformed name
    or a device this machine does not have is an LmlabError that says what to use instead."""
    import torch

    from lmlab.errors import LmlabError

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise LmlabError(f"device must be cpu, cuda or cuda:N, got {name!r}", params=("device",)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LmlabError(f"device {name} was asked for, but this machine has no CUDA GPU that torch can use; "
                         "use device cpu", params=("device",))
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LmlabError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)",
                         params=("device",))
    return device
