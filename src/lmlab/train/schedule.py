"""Learning-rate schedules as pure functions of the step or epoch (so resuming needs no scheduler state)."""
from __future__ import annotations

import math


def warmup_cosine(step: int, *, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Linear warmup to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `decay_steps`.

    >>> [round(warmup_cosine(s, lr=1.0, min_lr=0.1, warmup_steps=2, decay_steps=6), 3) for s in range(8)]
    [0.333, 0.667, 1.0, 0.868, 0.55, 0.232, 0.1, 0.1]
    """
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def step_decay(epoch: int, *, lr: float, decay: float, decay_start: int) -> float:
    """`lr` for the first `decay_start` epochs, then multiplied by `decay` every epoch (Zaremba et
    al. 2014: lr 1 for 4 epochs, then halved each epoch). Epochs count from 0.

    >>> [step_decay(e, lr=1.0, decay=0.5, decay_start=2) for e in range(5)]
    [1.0, 1.0, 0.5, 0.25, 0.125]
    """
    return lr * decay ** max(0, epoch - decay_start + 1)


def inverse_sqrt(step: int, *, lr: float, warmup_steps: int) -> float:
    """Linear warmup to `lr` at step `warmup_steps`, then lr * sqrt(warmup_steps / step): the
    schedule of "Attention Is All You Need" (d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)),
    with the peak given as `lr` instead of through d_model. Steps count from 0.

    >>> [round(inverse_sqrt(s, lr=1.0, warmup_steps=4), 3) for s in (0, 1, 3, 15)]
    [0.25, 0.5, 1.0, 0.5]
    """
    step = step + 1
    if warmup_steps == 0:
        return lr / math.sqrt(step)
    return lr * min(step / warmup_steps, math.sqrt(warmup_steps / step))
