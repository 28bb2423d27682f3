"""int8 linear layers for fast CPU decoding: `quantize_int8(model)` converts a model in place.

At batch 1, decoding reads every weight once per token, so its speed is set by the bytes of the
weights. `Int8Linear` keeps a Linear's weight as int8 with one scale per output row (a quarter of
the float32 bytes) and multiplies on PyTorch's fbgemm kernel (`quantized::linear_dynamic`, the one
`torch.ao` dynamic quantization runs; AVX2-optimised), which quantizes the activations to 7 bits
(`reduce_range`, as AVX2 needs) on a uniform grid from their minimum to their maximum. Everything
else (embeddings, LayerNorm, attention, the KV cache) stays float32.

The kernel spans one grid over its whole input, so in a batch an outlier in one row would coarsen
every row's grid. `Int8Linear` gives each row its own grid: one row (decoding at batch 1) goes to
the kernel as it is; several rows are first each mapped onto exactly [-1, 1], which the kernel's
common grid then fits, and mapped back after. Results thus do not depend on the other rows of a
batch of two or more; a row alone is rounded on an equally fine but differently placed grid.
Speed and quality cost: benchmarks/generate_speed.py. What is not here: choosing the dtype
(lmlab/bundle.py), bfloat16 (a plain `model.to`), saving quantized models (not supported).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from lmlab.errors import LmlabError


def _kernels_missing() -> str | None:
    """Why this PyTorch build cannot run Int8Linear, or None if it can."""
    if not hasattr(torch.ops.quantized, "linear_dynamic") or not hasattr(torch, "quantize_per_channel"):
        return "this PyTorch build has no quantized::linear_dynamic kernel"
    if not {"x86", "fbgemm", "qnnpack", "onednn"} & set(torch.backends.quantized.supported_engines):
        return "this PyTorch build has no quantized CPU engine"
    return None


class Int8Linear(nn.Module):
    """A frozen copy of an `nn.Linear` with int8 weights (per-output-row scales), for inference.

    Several rows x are fed as x' = (x - low) / half - 1, which is -1 at each row's minimum and
    exactly 1 at its maximum (half = (high - low) / 2), and y = W x + b is recovered as
    half * (W x') + (low + half) * rowsum(W) + b, with W the dequantized int8 weight.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        if weight.device.type != "cpu":
            raise LmlabError(f"int8 runs on the CPU; this model is on {weight.device}: load it on the CPU")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (out,)
        with warnings.catch_warnings():  # quantized tensors are deprecated as a user type; the kernel is not
            warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")
            quantized = torch.quantize_per_channel(weight, scales.double(), torch.zeros_like(scales, dtype=torch.long),
                                                   0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.register_buffer("row_sums", quantized.dequantize().sum(dim=1), persistent=False)  # (out,)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (R, in)
        if rows.size(0) == 1:  # the kernel's grid already is this row's own
            y = torch.ops.quantized.linear_dynamic(rows, self._packed, True) + self.bias  # reduce_range for AVX2
            return y.view(*x.shape[:-1], self.out_features)
        low, high = torch.aminmax(rows, dim=1, keepdim=True)  # (R, 1)
        half = (high - low).mul_(0.5).clamp_(min=1e-30)
        scaled = (rows - low).div_(half).sub_(1.0)  # (R, in), each row spans [-1, 1]
        y = torch.ops.quantized.linear_dynamic(scaled, self._packed, True)  # (R, out)
        y = torch.addcmul(torch.addcmul(self.bias, low + half, self.row_sums), y, half)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=int8"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every `nn.Linear` in `model` by an `Int8Linear`, in place; returns `model`, in eval mode.

    A Linear tied to an embedding (GPT's LM head) gets its own int8 copy: the embedding lookup
    stays float32. The model must be float32 and on the CPU, and is for inference only (the
    converted layers have no trainable parameters and are not saved in its state dict).
    """
    reason = _kernels_missing()
    if reason is not None:
        raise LmlabError(f"dtype int8 needs PyTorch's quantized CPU kernels: {reason}; use float32")
    for parameter in model.parameters():
        if parameter.dtype != torch.float32:
            raise LmlabError(f"quantize_int8 takes a float32 model, got {parameter.dtype}: load it as float32 first")
    linears = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Int8Linear(linear))
    return model.eval()
