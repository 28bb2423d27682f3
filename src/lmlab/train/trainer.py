"""The training loop: one function, `fit`, for every model family.

AdamW with decay / no-decay groups (or plain SGD), warmup + cosine learning rate (or Zaremba's
per-epoch step decay), gradient clipping and accumulation, optional bf16 autocast, periodic
validation, a progress bar, metrics.jsonl and loss.png, and atomic checkpoints that resume exactly
(same losses as an uninterrupted run on CPU).

Batches: random windows of `context_len` tokens; families that train on streams (models/registry.py:
nplm, rnn, lstm, gru) instead walk
the training stream as `batch_size` contiguous rows, `bptt` tokens at a time, carrying their state
(detached: truncated backpropagation through time) from one batch to the next and starting each
epoch from the zero state. The carried state is part of the checkpoint.
Setting up a run (corpus, tokenizer, run directory) lives in train/run.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmlab.atomic import atomic_write_text
from lmlab.data import TokenStream
from lmlab.errors import LmlabError
from lmlab.evaluate import mean_loss
from lmlab.io.checkpoint import (METRICS_FILE, TRAIN_STATE_FILE, load_tensors, save_model_weights,
                                 save_tensors)
from lmlab.models import FAMILIES, device_of, family_of
from lmlab.models.config import config_from_dict
from lmlab.runtime import keep_freed_memory, torch_device
from lmlab.train.schedule import inverse_sqrt, step_decay, warmup_cosine
from lmlab.viz.loss import plot_loss

PRECISIONS = ("auto", "fp32", "bf16")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "inverse-sqrt")
_STREAMED = [name for name, entry in FAMILIES.items() if entry.trains_on == "streams"]
_PAIRED = [name for name, entry in FAMILIES.items() if entry.trains_on == "pairs"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number (NaN included: the range checks reject it with the value's own message)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def option(default: Any, help: str) -> Any:
    """A TrainConfig field: its default and a help line (`lmlab train` makes its flags from them)."""
    return field(default=default, metadata={"help": help, "cli": True})


@dataclass(frozen=True)
class TrainConfig:
    """How to train: steps, batches, the optimizer and its schedule, validation, precision.

    Every field is an option of `lmlab train` (`--batch-size` for `batch_size`), with the help line
    and default written here once.
    """

    max_steps: int = option(2000, "optimizer steps")
    batch_size: int = option(12, "sequences per step")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-3, "peak learning rate")
    min_lr: float | None = option(None, "final learning rate (unset: lr / 10)")
    warmup_steps: int = option(100, "linear warmup steps")
    weight_decay: float = option(0.1, "AdamW weight decay of matrices and embeddings")
    beta1: float = option(0.9, "AdamW beta1 (decay of the gradient average)")
    beta2: float = option(0.99, "AdamW beta2 (decay of the squared-gradient average)")
    grad_clip: float = option(1.0, "gradient norm clip, 0 = off")
    eval_every: int = option(250, "validate and checkpoint every N steps")
    eval_batches: int = option(20, "batches per periodic validation (the last one reads all the validation text)")
    log_every: int = option(10, "log the training loss every N steps")
    seed: int = option(1337, "random seed")
    precision: str = option("auto", f"{' | '.join(PRECISIONS)} (autocast); auto picks bf16 only where it is faster")
    optimizer: str = option("adamw", "adamw | sgd (plain: no momentum, no weight decay)")
    schedule: str = option("cosine", "learning rate: cosine (warmup, then cosine to min_lr) | step (constant, "
                                     "then x lr_decay every epoch) | inverse-sqrt (warmup to lr, then lr * "
                                     "sqrt(warmup_steps / step), as in Attention Is All You Need)")
    lr_decay: float = option(0.5, "schedule step: multiply the lr by this every epoch ...")
    lr_decay_start: int = option(4, "... after this many epochs at lr")
    epochs: int | None = option(None, "passes over the training data, instead of max_steps")
    bptt: int = option(35, f"tokens per batch row of the families that train on streams ({', '.join(_STREAMED)}): "
                           "the unroll length; the state carries over to the next batch")
    label_smoothing: float = option(0.0, f"families trained on sentence pairs ({', '.join(_PAIRED)}): the share of "
                                         "each target's probability spread over the whole vocabulary in the loss")

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every", "bptt"):
            value = getattr(self, name)
            if not _is_int(value) or value < (0 if name == "max_steps" else 1):
                raise LmlabError(f"{name} must be a positive integer, got {value!r}", params=(name,))
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise LmlabError(f"seed must be an integer in [0, 2**63), got {self.seed!r}", params=("seed",))
        if self.epochs is not None and (not _is_int(self.epochs) or self.epochs < 1):
            raise LmlabError(f"epochs must be a positive integer, got {self.epochs!r}", params=("epochs",))
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise LmlabError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}",
                                 params=(name,))
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "beta1", "beta2", "lr_decay", "label_smoothing"):
            value = getattr(self, name)
            if not (value is None and name == "min_lr") and not _is_number(value):
                raise LmlabError(f"{name} must be a number, got {value!r}", params=(name,))
        if not 0 <= self.label_smoothing < 1:
            raise LmlabError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}", params=("label_smoothing",))
        if not 0 < self.lr_decay <= 1:
            raise LmlabError(f"lr_decay must be in (0, 1], got {self.lr_decay}", params=("lr_decay",))
        if not _is_int(self.lr_decay_start) or self.lr_decay_start < 0:
            raise LmlabError(f"lr_decay_start must be a whole number of epochs >= 0, got {self.lr_decay_start!r}",
                             params=("lr_decay_start",))
        if not 0 < self.lr < math.inf:
            raise LmlabError(f"lr must be a positive number, got {self.lr}", params=("lr",))
        if self.min_lr is not None and not 0 <= self.min_lr <= self.lr:
            raise LmlabError(f"min_lr must be between 0 and lr ({self.lr}), got {self.min_lr}", params=("min_lr", "lr"))
        if not _is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise LmlabError(f"warmup_steps must be a whole number >= 0, got {self.warmup_steps!r}",
                             params=("warmup_steps",))
        if not 0 <= self.weight_decay < math.inf:
            raise LmlabError(f"weight_decay must be >= 0, got {self.weight_decay}", params=("weight_decay",))
        if not 0 <= self.grad_clip < math.inf:
            raise LmlabError(f"grad_clip must be >= 0 (0 turns clipping off), got {self.grad_clip}",
                             params=("grad_clip",))
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise LmlabError(f"{name} must be in [0, 1), got {getattr(self, name)}", params=(name,))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lr_at(self, step: int, epoch: int = 0) -> float:
        """The learning rate of optimizer step `step`, which lies in epoch `epoch` (both from 0)."""
        if self.schedule == "step":
            lr = step_decay(epoch, lr=self.lr, decay=self.lr_decay, decay_start=self.lr_decay_start)
            return lr * (step + 1) / (self.warmup_steps + 1) if step < self.warmup_steps else lr
        if self.schedule == "inverse-sqrt":
            return inverse_sqrt(step, lr=self.lr, warmup_steps=self.warmup_steps)
        min_lr = self.lr / 10 if self.min_lr is None else self.min_lr
        return warmup_cosine(step, lr=self.lr, min_lr=min_lr, warmup_steps=self.warmup_steps,
                             decay_steps=self.max_steps)


@dataclass
class FitResult:
    steps: int
    train_loss: float
    val_loss: float | None
    tokens_per_s: float
    wall_s: float


def epoch_length(model: nn.Module, train_data: TokenStream, config: TrainConfig) -> int:
    """Batches in one pass over `train_data`: the sequential batches of a recurrent model, or as many
    random windows as hold as many tokens as the data (at least 1)."""
    if family_of(model).trains_on == "streams":
        return train_data.num_sequential_batches(config.batch_size, config.bptt)
    if family_of(model).trains_on == "pairs":  # train_data is a PairData
        return train_data.num_batches(config.batch_size)
    return max(1, len(train_data) // (config.batch_size * (model.context_len or config.bptt)))


def steps_for_epochs(model: nn.Module, train_data: TokenStream, config: TrainConfig, epochs: int) -> int:
    """Optimizer steps that make `epochs` passes over `train_data` (grad_accum batches per step)."""
    return math.ceil(epochs * epoch_length(model, train_data, config) / config.grad_accum)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW where matrices and embeddings decay and biases / norm gains do not; or plain SGD."""
    params = [p for p in model.parameters() if p.requires_grad]
    unique = list({id(p): p for p in params}.values())
    if config.optimizer == "sgd":
        return torch.optim.SGD(unique, lr=config.lr, momentum=0.0, weight_decay=0.0, foreach=True)
    decay = [p for p in unique if p.dim() >= 2]
    no_decay = [p for p in unique if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=True)


def use_bf16(config: TrainConfig, model: nn.Module) -> bool:
    """Whether to autocast to bf16. "auto" picks it on a GPU that has bf16, and on the CPU only
    for a transformer (a family trained on windows) whose matrices are 512 wide or more, on a CPU
    with native bf16 matrix units (AVX-512 / AMX): on AVX2-only CPUs bf16 matmuls run ~10x slower
    than fp32, and narrow layers are dominated by the casts."""
    if config.precision != "auto":
        return config.precision == "bf16"
    device = device_of(model)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if family_of(model).trains_on != "windows":
        return False  # recurrent cells and counts: bf16 not measured to pay
    width = max((min(p.shape) for p in model.parameters() if p.dim() == 2), default=0)
    return width >= 512 and torch.backends.cpu.get_cpu_capability().startswith(("AVX512", "AMX"))


def _pair_loss(model: nn.Module, batch: dict[str, torch.Tensor], bf16: bool, label_smoothing: float) -> torch.Tensor:
    """The mean target-token cross-entropy of a translation model on a batch of lmlab.data.pairs
    (with label smoothing when asked; the model's own loss otherwise)."""
    targets = batch.pop("targets")
    with torch.autocast(device_of(model).type, dtype=torch.bfloat16, enabled=bf16):
        logits, loss = model(**batch, targets=None if label_smoothing else targets)
    if label_smoothing:
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1,
                               label_smoothing=label_smoothing)
    return loss


def _state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, batch_rng: torch.Generator,
                   carry: tuple[torch.Tensor, ...] | None = None) -> dict[str, torch.Tensor]:
    """Everything needed to resume, as a flat dict of tensors (no pickles); `carry` is the state a
    recurrent model carries into its next batch."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"optim.{names[id(p)]}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if device_of(model).type == "cuda":  # dropout on the GPU draws from its own generator
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device_of(model))
    tensors["rng.batches"] = batch_rng.get_state()
    for i, part in enumerate(carry or ()):
        tensors[f"carry.{i}"] = part
    return tensors


def _restore_carry(tensors: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...] | None:
    parts = []
    while f"carry.{len(parts)}" in tensors:
        parts.append(tensors[f"carry.{len(parts)}"].clone().to(device))
    return tuple(parts) or None


def _restore_state(model: nn.Module, optimizer: torch.optim.Optimizer, batch_rng: torch.Generator,
                   tensors: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
        params = dict(model.named_parameters())
        for key, value in tensors.items():
            if key.startswith("optim."):
                name, slot = key[6:].rsplit(".", 1)
                target = params[name].device if value.dim() else value.device  # Adam's step count stays put
                optimizer.state[params[name]][slot] = value.clone().to(target)
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and device_of(model).type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], device_of(model))
        batch_rng.set_state(tensors["rng.batches"])
    except (RuntimeError, KeyError, ValueError) as e:
        detail = str(e).strip().splitlines()[-1].strip() if str(e).strip() else repr(e)
        raise LmlabError(f"{TRAIN_STATE_FILE} does not belong to the model in config.json ({detail}); "
                         "the run directory is inconsistent and cannot continue") from None


class Metrics:
    """metrics.jsonl (append-only, one JSON object per line) and loss.png in the run directory."""

    def __init__(self, run_dir: Path, keep_until_step: int):
        self.path = run_dir / METRICS_FILE
        self.plot_path = run_dir / "loss.png"
        self.rows = self._read(keep_until_step)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        self.file = open(self.path, "a", encoding="utf-8")

    def _read(self, keep_until_step: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            step = row.get("step", 0) if isinstance(row, dict) else None  # a line that is not a row: skipped
            if isinstance(step, (int, float)) and step <= keep_until_step:
                rows.append(row)
        return rows

    def log(self, **row: Any) -> None:
        self.rows.append(row)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def plot(self) -> None:
        plot_loss(self.rows, self.plot_path)

    def close(self) -> None:
        self.file.close()


def fit(model: nn.Module, train_data: TokenStream, val_data: TokenStream | None, run_dir: str | Path,
        config: TrainConfig, *, resume: bool = False, progress: bool = True, device: str = "cpu") -> FitResult:
    """Train `model` on batches of `train_data` (see the module docstring), checkpointing into
    `run_dir`; the model and its batches live on `device` ("cpu", "cuda", "cuda:1")."""
    run_dir = Path(run_dir)
    where = torch_device(device)
    model.to(where)
    keep_freed_memory()  # the same large tensors every step: no page faults for them after the first
    recurrent = family_of(model).trains_on == "streams"
    paired = family_of(model).trains_on == "pairs"  # train_data and val_data are PairData (lmlab.data.pairs)
    window = model.context_len or config.bptt  # tokens per batch row
    final_rows = 1 if recurrent else config.batch_size  # the last validation reads as `lmlab eval` does
    per_epoch = epoch_length(model, train_data, config)
    last_batch = None if config.epochs is None else config.epochs * per_epoch  # a run of whole epochs ends there
    torch.manual_seed(config.seed)
    batch_rng = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    bf16 = use_bf16(config, model)
    start_step = 0
    carry = None  # the state a recurrent model carries into its next batch
    if resume and (run_dir / TRAIN_STATE_FILE).exists():
        tensors, meta = load_tensors(run_dir / TRAIN_STATE_FILE)
        _restore_state(model, optimizer, batch_rng, tensors)
        carry = _restore_carry(tensors, where)
        start_step = int(meta["step"])
    if start_step > config.max_steps:
        raise LmlabError(f"{run_dir} has already trained for {start_step} steps, more than max_steps={config.max_steps}",
                         params=("max_steps",))
    metrics = Metrics(run_dir, keep_until_step=start_step)

    def checkpoint(step: int) -> None:
        batches = step * config.grad_accum
        position = {"step": step, "epoch": batches // per_epoch, "batch_in_epoch": batches % per_epoch}
        save_tensors(run_dir / TRAIN_STATE_FILE, _state_tensors(model, optimizer, batch_rng, carry), position)
        save_model_weights(run_dir, model, step)
        metrics.plot()

    if start_step == 0:
        checkpoint(0)
    model.train()
    tokens_per_step = config.batch_size * config.grad_accum * window
    if paired:  # target tokens of an average batch
        tokens_per_step = round(config.batch_size * config.grad_accum * train_data.target_tokens / len(train_data))
    bar = tqdm(total=config.max_steps, initial=start_step, disable=not progress, unit="step",
               dynamic_ncols=True, leave=False)
    started = time.perf_counter()
    window_start, window_steps = started, 0
    loss_sum = torch.zeros((), device=where)
    last_loss = math.nan
    val_loss = None
    for step in range(start_step, config.max_steps):
        lr = config.lr_at(step, epoch=step * config.grad_accum // per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro = range(step * config.grad_accum, (step + 1) * config.grad_accum)
        if last_batch is not None and micro.start < last_batch < micro.stop:  # the last step: no batch past it
            micro = range(micro.start, last_batch)
        if recurrent:  # an epoch's last batch is shorter: each micro-batch weighs by its tokens
            batches = [train_data.sequential_batch(batch % per_epoch, config.batch_size, config.bptt)
                       for batch in micro]
            counts = [int((y >= 0).sum()) for _, y in batches]
            total = sum(counts)
            weights = [n / total for n in counts]
        elif paired:  # batches of sentences hold unequal numbers of target tokens: each weighs by its own
            batches = [train_data.batch(batch, config.batch_size) for batch in micro]
            counts = [int((b["targets"] >= 0).sum()) for b in batches]
            weights = [n / sum(counts) for n in counts]
        for i, batch in enumerate(micro):
            if recurrent:
                index = batch % per_epoch  # batch 0 of an epoch starts from the zero state
                x, y = (t.to(where, non_blocking=True) for t in batches[i])
                with torch.autocast(where.type, dtype=torch.bfloat16, enabled=bf16):
                    _, loss, carry = model.forward_with_state(x, y, carry if index else None)
                carry = tuple(part.detach() for part in carry)  # truncated BPTT: no gradient into past batches
                (loss * weights[i]).backward()
            elif paired:
                loss = _pair_loss(model, {k: t.to(where, non_blocking=True) for k, t in batches[i].items()}, bf16,
                                  config.label_smoothing)
                (loss * weights[i]).backward()
            else:
                x, y = (t.to(where, non_blocking=True) for t in train_data.random_windows(config.batch_size, window,
                                                                                          batch_rng))
                with torch.autocast(where.type, dtype=torch.bfloat16, enabled=bf16):
                    _, loss = model(x, y)
                (loss / len(micro)).backward()  # every window holds the same number of tokens
            loss_sum += loss.detach()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window_steps += 1
        done = step + 1
        checkpoint_due = done % config.eval_every == 0 or done == config.max_steps
        if done % config.log_every == 0 or checkpoint_due:  # a log window never spans a checkpoint
            now = time.perf_counter()
            last_loss = loss_sum.item() / (window_steps * config.grad_accum)
            tokens_per_s = window_steps * tokens_per_step / max(now - window_start, 1e-9)
            metrics.log(step=done, loss=round(last_loss, 5), lr=lr, tokens_per_s=round(tokens_per_s),
                        elapsed_s=round(now - started, 3))
            bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            bar.update(window_steps)
            loss_sum.zero_()
            window_start, window_steps = now, 0
        finished = done == config.max_steps
        if val_data is not None and checkpoint_due:
            # periodic: a fixed sample of windows; at the end: the whole validation split
            val_loss = mean_loss(model, val_data, window, final_rows if finished else config.batch_size,
                                 max_batches=None if finished else config.eval_batches, bf16=bf16)
            metrics.log(step=done, val_loss=round(val_loss, 5))
            if progress:
                bar.write(f"step {done}: train loss {last_loss:.4f}, val loss {val_loss:.4f}", file=sys.stderr)
        if checkpoint_due:
            checkpoint(done)
    bar.close()
    if val_data is not None and val_loss is None:  # resumed a finished run: report its final state
        val_loss = mean_loss(model, val_data, window, final_rows, bf16=bf16)
    if math.isnan(last_loss):
        last_loss = next((r["loss"] for r in reversed(metrics.rows) if "loss" in r), math.nan)
    wall = time.perf_counter() - started
    steps_run = config.max_steps - start_step
    metrics.close()
    return FitResult(steps=config.max_steps, train_loss=last_loss, val_loss=val_loss,
                     tokens_per_s=steps_run * tokens_per_step / max(wall, 1e-9), wall_s=wall)


def fit_counts(model: nn.Module, train_data: TokenStream, val_data: TokenStream | None, run_dir: str | Path
               ) -> FitResult:
    """"Train" a count-based model (n-gram): count and smooth once, save, and score both splits."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    model.fit(np.asarray(train_data.tokens))
    wall = time.perf_counter() - started
    train_loss = mean_loss(model, train_data, None)
    val_loss = mean_loss(model, val_data, None) if val_data is not None else None
    save_model_weights(run_dir, model, 0)
    metrics = Metrics(run_dir, keep_until_step=-1)
    metrics.log(step=0, loss=round(train_loss, 5), elapsed_s=round(wall, 3),
                **({} if val_loss is None else {"val_loss": round(val_loss, 5)}))
    metrics.close()
    return FitResult(steps=0, train_loss=train_loss, val_loss=val_loss, tokens_per_s=len(train_data) / max(wall, 1e-9),
                     wall_s=wall)
