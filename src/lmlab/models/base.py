"""What the neural families share: the language-modelling loss, the softmax layer fused with it,
and `forward` for the families that are read in order (nplm, rnn, lstm, gru), whose real work is
`forward_with_state`."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of logits (..., V) against targets (...), skipping -1
    targets; computed in float32 whatever the logits' dtype.

    >>> lm_loss(torch.zeros(1, 2, 4), torch.tensor([[3, -1]])).item()  # uniform over 4: log 4
    1.3862943649291992
    """
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


VOCAB_BLOCK = 512  # softmax-layer rows per matrix product (see SoftmaxLayer)
FUSED_MIN_VOCAB = 4096  # softmax_layer fuses the layer with its loss from this vocabulary size up


class SoftmaxLayer(torch.autograd.Function):
    """A softmax layer and its loss in one step: hidden (N, H), weight (V, H), bias (V,) or None and
    targets (N,) -> logits (N, V) = hidden @ weight.T + bias, and the mean cross-entropy over the
    targets that are not -1. Values and gradients are those of `F.linear` then `lm_loss`; two
    things make it cheaper when V is large:
    - the forward keeps the softmax it takes the loss from, so the backward is one pass,
      (softmax - one-hot) / N, instead of taking the exponentials again;
    - the two products whose output is V wide (the logits, and the weight's gradient) run in blocks
      of VOCAB_BLOCK vocabulary rows, whose operands stay in cache.
    On the project's 2-core AVX2 machine the training steps of the PTB LSTM and NPLM (V = 10,000)
    and of a small GPT with the GPT-2 vocabulary run 3-15% faster (benchmarks/softmax_layer.py);
    with a character vocabulary its extra kernels cost about as much as they save, so
    `softmax_layer` uses it from FUSED_MIN_VOCAB up.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)  # the logits' gradient stays None when only the loss is used
        logits = hidden.new_empty(hidden.size(0), weight.size(0))
        for rows in _vocab_blocks(weight.size(0)):
            if bias is None:
                torch.mm(hidden, weight[rows].t(), out=logits[:, rows])
            else:
                torch.addmm(bias[rows], hidden, weight[rows].t(), out=logits[:, rows])
        kept = targets >= 0
        index = targets.clamp(min=0)[:, None]  # (N, 1); a skipped row points anywhere, its weight is 0
        top = logits.amax(1, keepdim=True)
        probs = (logits - top).exp_()  # the softmax before it is divided by its total
        total = probs.sum(1, keepdim=True)
        nll = total.log().add_(top).sub_(logits.gather(1, index)).squeeze(1)  # log-sum-exp - target logit
        count = kept.sum()
        ctx.has_bias = bias is not None
        ctx.save_for_backward(hidden, weight, probs, total, index, kept, count)
        return logits, nll.masked_fill(~kept, 0.0).sum() / count

    @staticmethod
    @once_differentiable  # a second derivative through it raises instead of coming out wrong
    def backward(ctx: Any, grad_logits: torch.Tensor | None, grad_loss: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        hidden, weight, probs, total, index, kept, count = ctx.saved_tensors
        if grad_loss is None:
            grad = grad_logits
        else:
            share = (grad_loss / count) * kept[:, None]  # (N, 1): each kept row's share of the mean
            grad = probs * (share / total)
            grad.scatter_add_(1, index, -share)
            if grad_logits is not None:
                grad += grad_logits
        if grad is None:
            return None, None, None, None
        grad_hidden = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            for rows in _vocab_blocks(weight.size(0)):
                torch.mm(grad[:, rows].t(), hidden, out=grad_weight[rows])
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None


def _vocab_blocks(vocab_size: int) -> list[slice]:
    return [slice(start, start + VOCAB_BLOCK) for start in range(0, vocab_size, VOCAB_BLOCK)]


def softmax_layer(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (..., H) -> logits (..., V) of the softmax layer `head`, and lm_loss against targets
    (...): through SoftmaxLayer for a float32 nn.Linear of FUSED_MIN_VOCAB outputs or more, through
    `head` and `lm_loss` otherwise (small vocabularies, bf16 or int8 weights, autocast)."""
    fused = (isinstance(head, nn.Linear) and head.out_features >= FUSED_MIN_VOCAB
             and hidden.dtype == head.weight.dtype == torch.float32
             and not torch.is_autocast_enabled(hidden.device.type))
    if not fused:
        logits = head(hidden)
        return logits, lm_loss(logits, targets)
    logits, loss = SoftmaxLayer.apply(hidden.reshape(-1, hidden.size(-1)), head.weight, head.bias,
                                      targets.reshape(-1))
    return logits.view(*hidden.shape[:-1], -1), loss


class ReadInOrder:
    """Mixed into a model that carries a state from one window to the next (a family that trains
    on streams, models/registry.py): lmlab's trainer and evaluator feed it consecutive batches, and
    `forward` is `forward_with_state` without the state it returns."""

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, state: tuple | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced: ids (B, T) -> logits (B, T, V) and the loss, from `state` (default: the start)."""
        logits, loss, _ = self.forward_with_state(ids, targets, state)  # type: ignore[attr-defined]
        return logits, loss
