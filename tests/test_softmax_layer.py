"""The fused softmax layer (lmlab.models.base.SoftmaxLayer) gives the values and gradients of
`F.linear` followed by `lm_loss`, and `softmax_layer` falls back to those two wherever it cannot run."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.models import base
from lmlab.models.base import FUSED_MIN_VOCAB, VOCAB_BLOCK, SoftmaxLayer, lm_loss, softmax_layer
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.models.nplm import NPLM, NPLMConfig
from lmlab.models.quantize import Int8Linear
from lmlab.models.rnn import RNNConfig, RNNLM


def reference(hidden, weight, bias, targets):
    logits = F.linear(hidden, weight, bias)
    return logits, lm_loss(logits, targets)


def leaves(n, h, v, bias=True, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g, dtype=dtype) / h ** 0.5).requires_grad_()
    b = torch.randn(v, generator=g, dtype=dtype).requires_grad_() if bias else None
    return hidden, weight, b


@pytest.mark.parametrize("vocab", [3, VOCAB_BLOCK, VOCAB_BLOCK + 1, 2 * VOCAB_BLOCK + 77])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("logits_used", [False, True])
def test_values_and_gradients_equal_linear_then_lm_loss(vocab, bias, logits_used):
    targets = torch.randint(0, vocab, (37,), generator=torch.Generator().manual_seed(1))
    targets[::4] = -1  # skipped positions
    other = torch.randn(37, vocab, generator=torch.Generator().manual_seed(2))  # a second use of the logits
    grads, outputs = [], []
    for fn in (SoftmaxLayer.apply, reference):
        tensors = leaves(37, 24, vocab, bias)
        logits, loss = fn(*tensors, targets)
        total = loss + ((logits * other).sum() * 1e-3 if logits_used else 0)
        total.backward()
        outputs.append((logits.detach(), loss.detach()))
        grads.append([t.grad for t in tensors if t is not None])
    (fused_logits, fused_loss), (ref_logits, ref_loss) = outputs
    torch.testing.assert_close(fused_logits, ref_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused_loss, ref_loss, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_gradcheck_in_double_precision():
    hidden, weight, bias = leaves(5, 4, VOCAB_BLOCK + 3, dtype=torch.float64)
    targets = torch.tensor([0, -1, VOCAB_BLOCK + 2, 7, 512])
    assert torch.autograd.gradcheck(lambda h, w, b: SoftmaxLayer.apply(h, w, b, targets), (hidden, weight, bias))


def test_large_logits_do_not_overflow():
    hidden, weight, bias = leaves(4, 8, 50)
    with torch.no_grad():
        weight.mul_(1e3)  # logits in the thousands: exp would overflow without the max shift
    targets = torch.tensor([1, 2, 3, 4])
    fused = SoftmaxLayer.apply(hidden, weight, bias, targets)[1]
    assert torch.isfinite(fused)
    torch.testing.assert_close(fused, reference(hidden, weight, bias, targets)[1])


def test_backward_twice_with_retain_graph_gives_the_same_gradient():
    hidden, weight, bias = leaves(6, 8, 40)
    _, loss = SoftmaxLayer.apply(hidden, weight, bias, torch.arange(6))
    loss.backward(retain_graph=True)
    first = hidden.grad.clone()
    loss.backward()
    torch.testing.assert_close(hidden.grad, 2 * first)


def test_a_second_derivative_is_refused():
    hidden, weight, bias = leaves(4, 8, 40)
    _, loss = SoftmaxLayer.apply(hidden, weight, bias, torch.arange(4))
    (grad,) = torch.autograd.grad(loss, hidden, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


def test_every_target_skipped_gives_nan_like_cross_entropy():
    hidden, weight, bias = leaves(3, 4, 10)
    targets = torch.full((3,), -1)
    assert torch.isnan(SoftmaxLayer.apply(hidden, weight, bias, targets)[1])
    assert torch.isnan(reference(hidden, weight, bias, targets)[1])


def test_softmax_layer_uses_the_fused_path_only_where_it_can(monkeypatch):
    calls = []
    original = SoftmaxLayer.apply
    monkeypatch.setattr(SoftmaxLayer, "apply", lambda *a: calls.append(1) or original(*a))
    targets = torch.randint(0, 100, (2, 3))
    head = nn.Linear(8, FUSED_MIN_VOCAB)
    hidden = torch.randn(2, 3, 8)
    logits, loss = softmax_layer(hidden, head, targets)
    assert calls and logits.shape == (2, 3, FUSED_MIN_VOCAB)
    torch.testing.assert_close(loss, lm_loss(head(hidden), targets))
    calls.clear()
    softmax_layer(hidden, nn.Linear(8, FUSED_MIN_VOCAB - 1), targets)  # a small vocabulary
    softmax_layer(hidden.bfloat16(), head.bfloat16(), targets)  # bf16 weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        softmax_layer(hidden, nn.Linear(8, FUSED_MIN_VOCAB), targets)
    logits, loss = softmax_layer(hidden, Int8Linear(nn.Linear(8, FUSED_MIN_VOCAB)), targets)  # no .weight
    assert not calls and logits.shape == (2, 3, FUSED_MIN_VOCAB) and torch.isfinite(loss)


@pytest.mark.parametrize("family", ["lstm", "gpt", "nplm"])
def test_models_train_the_same_through_either_path(family, monkeypatch):
    """A model with a large vocabulary gets the same loss and gradients with the fused layer as with
    F.linear and lm_loss (FUSED_MIN_VOCAB raised past its vocabulary)."""
    vocab = FUSED_MIN_VOCAB + 5
    ids = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(3))
    results = []
    for threshold in (FUSED_MIN_VOCAB, vocab + 1):
        monkeypatch.setattr(base, "FUSED_MIN_VOCAB", threshold)
        torch.manual_seed(0)
        model = {"lstm": lambda: RNNLM(RNNConfig(cell="lstm", vocab_size=vocab, d_embed=16, hidden=16, layers=1)),
                 "gpt": lambda: GPT(GPTConfig(vocab_size=vocab, n_layer=1, n_head=2, d_model=16, context_len=16,
                                              dropout=0.0)),
                 "nplm": lambda: NPLM(NPLMConfig(vocab_size=vocab, order=3, d_embed=8, hidden=16))}[family]()
        logits, loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        results.append((logits.detach(), loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (logits_a, loss_a, grads_a), (logits_b, loss_b, grads_b) = results
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
