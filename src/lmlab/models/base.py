"""What the neural families share: the language-modelling loss, and `forward` for the families that
are read in order (nplm, rnn, lstm, gru), whose real work is `forward_with_state`."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of logits (..., V) against targets (...), skipping -1
    targets; computed in float32 whatever the logits' dtype.

    >>> lm_loss(torch.zeros(1, 2, 4), torch.tensor([[3, -1]])).item()  # uniform over 4: log 4
    1.3862943649291992
    """
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class ReadInOrder:
    """Mixed into a model that carries a state from one window to the next (`recurrent`): lmlab's
    trainer and evaluator feed it consecutive batches, and `forward` is `forward_with_state`
    without the state it returns."""

    recurrent = True

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, state: tuple | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced: ids (B, T) -> logits (B, T, V) and the loss, from `state` (default: the start)."""
        logits, loss, _ = self.forward_with_state(ids, targets, state)  # type: ignore[attr-defined]
        return logits, loss
