"""Scoring a translation model: the negative log-likelihood of each reference target given its
source, teacher forced, over the batches of lmlab.data.pairs. BLEU and chrF are bleu.py's."""
from __future__ import annotations

import torch
import torch.nn as nn

from lmlab.data.pairs import PairData
from lmlab.models import device_of


@torch.no_grad()
def pairs_nll(model: nn.Module, data: PairData, batch_size: int = 32, max_batches: int | None = None,
              bf16: bool = False) -> tuple[float, int]:
    """Summed NLL (nats) of every target token (the end-of-text token included) and their number."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    total, count = 0.0, 0
    for i, batch in enumerate(data.in_order(batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        targets = batch.pop("targets")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(**batch, targets=targets)
        n = int((targets >= 0).sum())
        total += loss.item() * n
        count += n
    model.train(was_training)
    return total, count
