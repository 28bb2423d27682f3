"""Setting up and resuming a run of a translation family (trains on pairs): parallel text ->
tokenizers -> encoded pairs -> model -> `fit`.

The data is two aligned files (`source`, `target`) or one TSV file (`data`), and the same for
validation (`val_source`, `val_target` or `val_data`); without validation data, a fixed seeded
`VAL_PAIRS` pairs of the training data are held out. The vocabulary is one tokenizer trained on
both sides (`vocab="joint"`, the default: the Transformer then ties its embeddings) or one per
side (`vocab="separate"`: source_tokenizer.json beside tokenizer.json, the target's). The
tokenizer must have an end-of-text token: it ends every sentence and starts every target.
Resuming re-reads and re-encodes the text, after checking it is what the run trained on.
`lmlab.train.train` sends pair families here; the loop is trainer.py's.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from lmlab.atomic import check_new_folder, remove_stale_temporaries
from lmlab.data.pairs import PairData, encode_pairs, read_pairs, read_tsv, split_pairs
from lmlab.errors import LmlabError
from lmlab.io.checkpoint import TOKENIZER_FILE, read_run_config, write_run_config
from lmlab.tokenize import build_tokenizer, check_options
from lmlab.tokenize import load as load_tokenizer
from lmlab.train.trainer import TrainConfig, fit, steps_for_epochs

SOURCE_TOKENIZER_FILE = "source_tokenizer.json"
DEFAULT_TOKENIZER = "bpe"
DEFAULT_VOCAB_SIZE = 8000
VOCABULARIES = ("joint", "separate")
VAL_PAIRS = 1000  # held out when no validation data is given (at most a tenth of the pairs)
PAIR_OPTIONS = ("source", "target", "data", "val_source", "val_target", "val_data", "max_len", "vocab")


def _read(paths: dict[str, Any], prefix: str) -> list[tuple[str, str]] | None:
    source, target, tsv = (paths.get(prefix + name) for name in ("source", "target", "data"))
    if tsv is not None and (source is not None or target is not None):
        raise LmlabError(f"give {prefix}data or {prefix}source and {prefix}target, not both",
                         params=(prefix + "data", prefix + "source", prefix + "target"))
    if tsv is not None:
        return read_tsv(tsv)
    if (source is None) != (target is None):
        raise LmlabError(f"give both {prefix}source and {prefix}target (aligned files), or {prefix}data",
                         params=(prefix + "source", prefix + "target", prefix + "data"))
    return None if source is None else read_pairs(source, target)


def read_split(paths: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The training and validation pairs the paths name (validation held out when not given)."""
    train = _read(paths, "")
    if train is None:
        raise LmlabError("a translation model trains on sentence pairs: give source and target (aligned files) "
                         "or data (a TSV file of source<TAB>target lines)", params=("source", "target", "data"))
    val = _read(paths, "val_")
    if val is None:
        train, val, _ = split_pairs(train, val_size=min(VAL_PAIRS, max(1, len(train) // 10)))
    return train, val


def _tokenizers(run_dir: Path) -> tuple[Any, Any]:
    target = load_tokenizer(run_dir / TOKENIZER_FILE)
    source_file = run_dir / SOURCE_TOKENIZER_FILE
    return (load_tokenizer(source_file) if source_file.exists() else target), target


def encoded(pairs: list[tuple[str, str]], source_tok: Any, target_tok: Any, net: Any, max_len: int | None,
            seed: int, where: str) -> PairData:
    limit = min(net.context_len, net.max_source_len)
    data = encode_pairs(pairs, source_tok.encode, source_tok.eot_id, target_tok.encode, target_tok.eot_id,
                        limit=limit, max_len=max_len, where=where)
    return PairData(data, start_id=target_tok.eot_id, seed=seed)


def _digest(pairs: list[tuple[str, str]]) -> str:
    from lmlab.train.run import _digest as text_digest

    return text_digest("\n".join(f"{s}\t{t}" for s, t in pairs))


def train_pairs(*, out: str | Path, model: str, tokenizer: str | None, preset: str | None,
                model_overrides: dict[str, Any], train_overrides: dict[str, Any], tokenizer_options: dict[str, Any],
                pair_data: dict[str, Any], resume: bool, progress: bool, device: str) -> Any:
    """A new run of translation family `model` in `out` (see the module docstring), or its resumption."""
    from lmlab.train.run import RunResult, _build, _check_unchanged, model_options

    run_dir = Path(out)
    if resume:
        config = read_run_config(run_dir)
        TrainConfig.from_dict({**config["train"], **train_overrides})
        _check_unchanged(run_dir, config, data=None, val_data=None, val_fraction=None, model=model, preset=preset,
                         model_options=model_overrides, tokenizer=tokenizer, tokenizer_options=tokenizer_options,
                         train_options=train_overrides)
        recorded = config["data"]["settings"]
        changed = [name for name, value in pair_data.items() if name in PAIR_OPTIONS and
                   (str(Path(value).resolve()) if isinstance(value, str) and name != "vocab" else value)
                   != recorded.get(name)]
        if changed:
            raise LmlabError(f"{', '.join(changed)} differ(s) from this run's own; resume continues a run with its "
                             "own data", params=(*changed, "resume"))
        return _resume(run_dir, config, {k: v for k, v in train_overrides.items() if k in ("max_steps", "epochs")},
                       progress, device)
    if (run_dir / "config.json").exists():
        raise LmlabError(f"{run_dir} already holds a run; continue it with resume, or train into another folder",
                         params=("resume",))
    check_new_folder(run_dir)
    unknown = sorted(set(pair_data) - set(PAIR_OPTIONS))
    if unknown:
        raise LmlabError(f"unknown parallel-data option(s): {', '.join(unknown)}")
    vocab = pair_data.get("vocab", "joint")
    if vocab not in VOCABULARIES:
        raise LmlabError(f"vocab must be one of {', '.join(VOCABULARIES)}, got {vocab!r}", params=("vocab",))
    tokenizer = tokenizer or DEFAULT_TOKENIZER
    train_config = TrainConfig.from_dict(train_overrides)
    options = model_options(model, preset, model_overrides)
    if tokenizer == "bpe":
        tokenizer_options.setdefault("vocab_size", DEFAULT_VOCAB_SIZE)
    check_options(tokenizer, tokenizer_options)
    train_pairs_text, val_pairs_text = read_split(pair_data)
    sources = "\n".join(s for s, _ in train_pairs_text)
    targets = "\n".join(t for _, t in train_pairs_text)
    if vocab == "joint":
        target_tok = source_tok = build_tokenizer(tokenizer, sources + "\n" + targets, **tokenizer_options)
    else:
        source_tok = build_tokenizer(tokenizer, sources, **tokenizer_options)
        target_tok = build_tokenizer(tokenizer, targets, **tokenizer_options)
        options["source_vocab_size"] = source_tok.vocab_size
    for tok in {id(source_tok): source_tok, id(target_tok): target_tok}.values():
        if tok.eot_id is None:
            raise LmlabError(f"the {tok.kind} tokenizer has no end-of-text token, which ends every sentence of a "
                             "translation: use tokenizer bpe or gpt2", params=("tokenizer",))
    options["vocab_size"] = target_tok.vocab_size
    torch.manual_seed(train_config.seed)
    net = _build(model, options)
    max_len = pair_data.get("max_len")
    train_data = encoded(train_pairs_text, source_tok, target_tok, net, max_len, train_config.seed, "the training data")
    val_data = encoded(val_pairs_text, source_tok, target_tok, net, max_len, train_config.seed, "the validation data")
    if train_config.epochs is not None:
        train_config = dataclasses.replace(
            train_config, max_steps=steps_for_epochs(net, train_data, train_config, train_config.epochs))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LmlabError(f"cannot create the run directory {run_dir}: {e.strerror or e}") from None
    target_tok.save(run_dir / TOKENIZER_FILE)
    if source_tok is not target_tok:
        source_tok.save(run_dir / SOURCE_TOKENIZER_FILE)
    settings = {name: (str(Path(value).resolve()) if name not in ("max_len", "vocab") else value)
                for name, value in pair_data.items() if value is not None}
    settings.setdefault("vocab", vocab)
    config = {
        "model": {"family": model, "config": net.config.to_dict(), "parameters": net.num_parameters()},
        "tokenizer": {"kind": target_tok.kind, "vocab_size": target_tok.vocab_size, "options": tokenizer_options,
                      "vocab": vocab},
        "train": train_config.to_dict(),
        "data": {"kind": "pairs", "settings": settings, "train_sha256": _digest(train_pairs_text),
                 "val_sha256": _digest(val_pairs_text), "train_pairs": len(train_data), "val_pairs": len(val_data),
                 "train_dropped": train_data.dropped, "val_dropped": val_data.dropped,
                 "train_target_tokens": train_data.target_tokens, "val_target_tokens": val_data.target_tokens},
    }
    write_run_config(run_dir, config)
    result = fit(net, train_data, val_data, run_dir, train_config, progress=progress, device=device)
    return RunResult(out=str(run_dir), steps=result.steps, train_loss=result.train_loss, val_loss=result.val_loss,
                     tokens_per_s=result.tokens_per_s, wall_s=result.wall_s, parameters=net.num_parameters())


def run_pairs(run_dir: Path, config: dict[str, Any], net: Any) -> tuple[PairData, PairData]:
    """A run's training and validation pairs, encoded again and checked against what it trained on."""
    source_tok, target_tok = _tokenizers(run_dir)
    data = config["data"]
    train, val = read_split(data["settings"])
    if _digest(train) != data["train_sha256"] or _digest(val) != data["val_sha256"]:
        raise LmlabError(f"the parallel data of {run_dir} changed since the run started; restore it or start a new run")
    seed = config["train"]["seed"]
    max_len = data["settings"].get("max_len")
    return (encoded(train, source_tok, target_tok, net, max_len, seed, "the training data"),
            encoded(val, source_tok, target_tok, net, max_len, seed, "the validation data"))


def _resume(run_dir: Path, config: dict[str, Any], changes: dict[str, Any], progress: bool, device: str) -> Any:
    from lmlab.train.run import RunResult, _build, _check_resumable

    if "max_steps" in changes:
        changes["epochs"] = None
    train_config = dataclasses.replace(TrainConfig.from_dict(config["train"]), **changes)
    torch.manual_seed(train_config.seed)
    net = _build(config["model"]["family"], config["model"]["config"])
    remove_stale_temporaries(run_dir)
    train_data, val_data = run_pairs(run_dir, config, net)
    if changes.get("epochs") is not None:
        train_config = dataclasses.replace(
            train_config, max_steps=steps_for_epochs(net, train_data, train_config, train_config.epochs))
    _check_resumable(run_dir, train_config.max_steps)
    if changes:
        config["train"] = train_config.to_dict()
        write_run_config(run_dir, {k: v for k, v in config.items() if k != "format_version"})
    result = fit(net, train_data, val_data, run_dir, train_config, resume=True, progress=progress, device=device)
    return RunResult(out=str(run_dir), steps=result.steps, train_loss=result.train_loss, val_loss=result.val_loss,
                     tokens_per_s=result.tokens_per_s, wall_s=result.wall_s, parameters=net.num_parameters())
