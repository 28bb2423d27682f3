"""Setting up and resuming a training run: corpus -> tokenizer -> token cache -> model -> `fit`.

`train(...)` is the one importable entry point (the CLI's `lmlab train` is a thin wrapper). The run
directory layout is DESIGN.md "Files on disk"; the loop itself is train/trainer.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.data import TokenStream, default_corpus_path, read_corpus, split_text, tokenize_to_file
from lmlab.errors import LmlabError
from lmlab.atomic import check_new_folder, remove_stale_temporaries
from lmlab.io.checkpoint import (MODEL_FILE, TOKENIZER_FILE, TRAIN_STATE_FILE, checkpoint_step, read_run_config,
                                 write_run_config)
from lmlab.models import build_model, family, family_of, preset_options
from lmlab.tokenize import build_tokenizer
from lmlab.tokenize import load as load_tokenizer
from lmlab.train.trainer import FitResult, TrainConfig, fit, fit_counts, steps_for_epochs

CACHE_DIR = "cache"


@dataclass
class RunResult:
    out: str
    steps: int
    train_loss: float
    val_loss: float | None
    tokens_per_s: float
    wall_s: float
    parameters: int


def model_options(family_name: str, preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's values (or the family's default preset's), then explicit overrides (None means
    "not given")."""
    options = preset_options(family_name, preset)
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _load_split(data: str | None, val_data: str | None, val_fraction: float) -> tuple[str, str]:
    text = read_corpus(data if data is not None else default_corpus_path())
    if val_data is not None:
        return text, read_corpus(val_data)
    return split_text(text, val_fraction)


def _open_token_caches(run_dir: Path, data: dict[str, Any]) -> tuple[TokenStream, TokenStream] | None:
    """The run's memmapped token files, or None when one is missing, unreadable or not the length
    config.json recorded (a damaged cache must not give a wrong score)."""
    streams = []
    for name in ("train", "val"):
        path = run_dir / CACHE_DIR / f"{name}.bin"
        if not (path.exists() and Path(str(path) + ".json").exists()):
            return None
        try:
            stream = TokenStream.open(path)
        except LmlabError:
            return None
        if len(stream) != data.get(f"{name}_tokens"):
            return None
        streams.append(stream)
    return streams[0], streams[1]


def _token_caches(run_dir: Path, config: dict[str, Any], tokenizer: Any) -> tuple[TokenStream, TokenStream]:
    """Open the run's memmapped token files, (re)building them from the corpus when missing or damaged."""
    data = config["data"]
    streams = _open_token_caches(run_dir, data)
    if streams is not None:
        return streams
    train_text, val_text = _load_split(data["path"], data["val_path"], data["val_fraction"])
    if _digest(train_text) != data["train_sha256"]:
        raise LmlabError(f"the training data at {data['path']} changed since this run started; "
                         f"restore it or start a new run")
    recorded = data.get("val_sha256")  # None in runs from before it was recorded: no check
    if recorded is not None and recorded != _digest(val_text):
        raise LmlabError(f"the validation data at {data['val_path'] or data['path']} changed since this run "
                         "started; restore it or start a new run")
    return _write_token_caches(run_dir, tokenizer, train_text, val_text)


def _write_token_caches(run_dir: Path, tokenizer: Any, train_text: str, val_text: str
                        ) -> tuple[TokenStream, TokenStream]:
    cache = run_dir / CACHE_DIR
    return tuple(tokenize_to_file(text, tokenizer.encode_array, tokenizer.vocab_size, cache / f"{name}.bin")
                 for name, text in (("train", train_text), ("val", val_text)))


def _remove_token_caches(run_dir: Path) -> None:
    """Delete only the files lmlab wrote, then the folders if that left them empty."""
    for name in ("train.bin", "train.bin.json", "val.bin", "val.bin.json"):
        (run_dir / CACHE_DIR / name).unlink(missing_ok=True)
    for folder in (run_dir / CACHE_DIR, run_dir):
        try:
            folder.rmdir()
        except OSError:
            return


def check_lengths(train_stream: TokenStream, val_stream: TokenStream, context_len: int | None) -> None:
    """Fail early, before a run directory is written, when there is too little text to train on.

    `context_len` is the length of a training window; None for a model read in order (recurrent),
    which needs only a token and the one after it."""
    if context_len is None:
        if len(train_stream) < 2:
            raise LmlabError(f"only {len(train_stream)} token(s) of training data: nothing to predict; use more text")
    elif len(train_stream) < context_len + 1:
        raise LmlabError(f"only {len(train_stream)} tokens of training data, fewer than context_len + 1 = "
                         f"{context_len + 1}; use more text or a smaller --context-len")
    if len(val_stream) < 2:
        raise LmlabError(f"the validation split has only {len(val_stream)} token(s); use more text, "
                         f"or give --val-data")


def validation_split(run_dir: Path, config: dict[str, Any], tokenizer: Any) -> tuple[TokenStream, int]:
    """A run's validation tokens and the UTF-8 size of their text."""
    _, val_stream = _token_caches(run_dir, config, tokenizer)
    return val_stream, config["data"]["val_bytes"]


def train(data: str | None = None, *, out: str | Path, model: str = "gpt", tokenizer: str = "char",
          preset: str | None = None, val_data: str | None = None, val_fraction: float = 0.1,
          model_overrides: dict[str, Any] | None = None, train_overrides: dict[str, Any] | None = None,
          tokenizer_options: dict[str, Any] | None = None, resume: bool = False,
          progress: bool = True) -> RunResult:
    """Train a model on `data` (a file or folder; default: Tiny Shakespeare) into run directory `out`.

    With `resume=True`, continue the run in `out` from its last checkpoint with its saved settings
    (only `max_steps` or `epochs` may be raised); the losses match an uninterrupted run exactly on CPU.
    `train_overrides` may give `epochs` instead of `max_steps`: the run then takes as many steps as
    that many passes over the training data need. With the word tokenizer, every line end is an
    `<eos>` token the model predicts (`eos_per_line`, the PTB / WikiText convention) unless
    `tokenizer_options` says otherwise.
    """
    run_dir = Path(out)
    if resume:
        return _resume(run_dir, train_overrides or {}, progress)
    if (run_dir / "config.json").exists():
        raise LmlabError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    check_new_folder(run_dir)  # a new run goes only into a new or empty folder
    entry = family(model)
    train_given = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    if "epochs" in train_given and "max_steps" in train_given:
        raise LmlabError("give epochs or max_steps, not both", params=("epochs", "max_steps"))
    train_config = TrainConfig.from_dict(train_given)
    options = model_options(model, preset, model_overrides or {})
    train_text, val_text = _load_split(data, val_data, val_fraction)
    tokenizer_options = dict(tokenizer_options or {})
    if tokenizer == "word":
        tokenizer_options.setdefault("eos_per_line", True)
    tok = build_tokenizer(tokenizer, train_text, **tokenizer_options)
    options["vocab_size"] = tok.vocab_size
    for name, token in entry.from_tokenizer.items():
        options.setdefault(name, tok.special_tokens.get(token))
    torch.manual_seed(train_config.seed)
    net = _build(model, options)  # validates the model options before anything is written
    counted = entry.trains_on == "counts"
    if counted and train_given:
        raise LmlabError(f"model {model} is counted in one pass, not trained by steps: drop the training options "
                         f"({', '.join(sorted(train_given))})", params=("model", *sorted(train_given)))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LmlabError(f"cannot create the run directory {run_dir}: {e.strerror or e}") from None
    train_stream, val_stream = _write_token_caches(run_dir, tok, train_text, val_text)
    try:
        check_lengths(train_stream, val_stream, None if entry.trains_on == "streams" else net.context_len or train_config.bptt)
    except LmlabError:
        _remove_token_caches(run_dir)
        raise
    if train_config.epochs is not None:
        train_config = dataclasses.replace(
            train_config, max_steps=steps_for_epochs(net, train_stream, train_config, train_config.epochs))
    tok.save(run_dir / TOKENIZER_FILE)
    config = {
        "model": {"family": model, "config": net.config.to_dict(), "parameters": net.num_parameters()},
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size},
        "train": train_config.to_dict(),
        "data": {"path": None if data is None else str(Path(data).resolve()),
                 "val_path": None if val_data is None else str(Path(val_data).resolve()),
                 "val_fraction": val_fraction, "train_sha256": _digest(train_text), "val_sha256": _digest(val_text),
                 "train_chars": len(train_text), "val_chars": len(val_text),
                 "val_bytes": len(val_text.encode("utf-8")),
                 "train_tokens": len(train_stream), "val_tokens": len(val_stream)},
    }
    write_run_config(run_dir, config)  # last: a directory with config.json is a complete run set-up
    del train_text, val_text  # the token files hold them now: training needs no copy of the corpus
    if counted:
        return _finish(run_dir, net, fit_counts(net, train_stream, val_stream, run_dir))
    return _finish(run_dir, net, fit(net, train_stream, val_stream, run_dir, train_config, progress=progress))


def _build(family: str, options: dict[str, Any]) -> torch.nn.Module:
    try:
        return build_model(family, options)
    except (RuntimeError, MemoryError) as e:  # sizes past the machine's memory
        raise LmlabError(f"cannot build this {family} model ({str(e).splitlines()[0][:200]}); "
                         "use smaller sizes") from None


def _resume(run_dir: Path, train_overrides: dict[str, Any], progress: bool) -> RunResult:
    config = read_run_config(run_dir)  # a run killed before its first checkpoint starts over from step 0
    changes = {k: v for k, v in train_overrides.items() if v is not None}
    if set(changes) - {"max_steps", "epochs"}:
        raise LmlabError(f"--resume continues with the run's own settings; only --max-steps or --epochs may change "
                         f"(got {', '.join(sorted(set(changes) - {'max_steps', 'epochs'}))})")
    if len(changes) > 1:
        raise LmlabError("give --epochs or --max-steps, not both")
    if "max_steps" in changes:
        changes["epochs"] = None  # the step count now comes from --max-steps
    train_config = dataclasses.replace(TrainConfig.from_dict(config["train"]), **changes)
    tok = load_tokenizer(run_dir / TOKENIZER_FILE)
    torch.manual_seed(train_config.seed)  # the same initial weights as a fresh run, if no checkpoint exists
    net = _build(config["model"]["family"], config["model"]["config"])
    remove_stale_temporaries(run_dir)  # left by a kill in the middle of an atomic write
    train_stream, val_stream = _token_caches(run_dir, config, tok)
    if "epochs" in changes and changes["epochs"] is not None:
        train_config = dataclasses.replace(
            train_config, max_steps=steps_for_epochs(net, train_stream, train_config, train_config.epochs))
    counted = family_of(net).trains_on == "counts"
    if not counted:
        _check_resumable(run_dir, train_config.max_steps)
    if changes:
        config["train"] = train_config.to_dict()
        write_run_config(run_dir, {k: v for k, v in config.items() if k != "format_version"})
    if counted:  # counting is deterministic: resuming simply counts again
        return _finish(run_dir, net, fit_counts(net, train_stream, val_stream, run_dir))
    return _finish(run_dir, net, fit(net, train_stream, val_stream, run_dir, train_config, resume=True,
                                     progress=progress))


def _check_resumable(run_dir: Path, max_steps: int) -> None:
    """Resuming needs train_state.safetensors once the model has trained, and never goes backwards."""
    state_step = checkpoint_step(run_dir / TRAIN_STATE_FILE)  # None when missing or unreadable
    if state_step is None and (run_dir / TRAIN_STATE_FILE).exists():
        raise LmlabError(f"{run_dir / TRAIN_STATE_FILE} is damaged, so the run cannot continue exactly; "
                         f"its weights in {MODEL_FILE} still load for eval and generate")
    model_step = checkpoint_step(run_dir / MODEL_FILE)
    if state_step is None and model_step:
        raise LmlabError(f"{run_dir} has weights trained for {model_step} steps but no {TRAIN_STATE_FILE} "
                         "(optimizer and data position), so it cannot continue; it still loads for eval and "
                         "generate, or train a new run with another --out")
    if state_step is not None and max_steps < state_step:
        raise LmlabError(f"{run_dir} has already trained for {state_step} steps; --max-steps can only be raised "
                         f"(give {state_step} or more)")


def _finish(run_dir: Path, net: torch.nn.Module, result: FitResult) -> RunResult:
    return RunResult(out=str(run_dir), steps=result.steps, train_loss=result.train_loss, val_loss=result.val_loss,
                     tokens_per_s=result.tokens_per_s, wall_s=result.wall_s, parameters=net.num_parameters())
