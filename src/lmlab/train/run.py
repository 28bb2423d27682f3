"""Setting up and resuming a training run: corpus -> tokenizer -> token cache -> model -> `fit`.

`train(...)` is the one importable entry point (the CLI's `lmlab train` is a thin wrapper that
passes only the options it was given). It takes the same arguments to start a run and to resume
one: on resume, every setting given must equal the run's own (config.json), and only max_steps or
epochs may change. `model_defaults` says which model options a family takes and what a new run
gets for each. The run directory layout is DESIGN.md "Files on disk"; the loop is train/trainer.py.
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
from lmlab.models import DEFAULT_FAMILY, FAMILIES, build_model, family, family_of, preset_options
from lmlab.runtime import torch_device
from lmlab.tokenize import TOKENIZERS, build_tokenizer, check_options
from lmlab.tokenize import load as load_tokenizer
from lmlab.train.trainer import FitResult, TrainConfig, fit, fit_counts, steps_for_epochs

CACHE_DIR = "cache"
DEFAULT_MODEL = DEFAULT_FAMILY  # what a new run trains when `model` is not given
DEFAULT_TOKENIZER = "char"
DEFAULT_VAL_FRACTION = 0.1
RESUMABLE = ("max_steps", "epochs")  # the only training options a resumed run may change


@dataclass
class RunResult:
    out: str
    steps: int
    train_loss: float
    val_loss: float | None
    tokens_per_s: float
    wall_s: float
    parameters: int


def model_defaults(family_name: str) -> dict[str, Any]:
    """The model options a run of `family_name` may set, each with what a new run gets when it is
    not given: the family's default preset's value, else its config's default. Options the family
    fixes (lstm: cell) or takes from the tokenizer (vocab_size) are not among them.

    >>> model_defaults("gpt")["context_len"], model_defaults("lstm")["hidden"], "cell" in model_defaults("lstm")
    (64, 200, False)
    """
    entry = family(family_name)
    not_set = {"vocab_size", *entry.fixed, *entry.from_tokenizer}
    defaults = {spec.name: spec.default for spec in dataclasses.fields(entry.config_class())
                if spec.default is not dataclasses.MISSING and spec.name not in not_set
                and spec.metadata.get("cli", True)}  # a dict-valued option (rope_scaling) has no flag
    defaults.update(preset_options(family_name, None))
    return defaults


def model_options(family_name: str, preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The options a new run's model is built with: `preset`'s values (or the family's default
    preset's), then the options `given`, which must be ones the family takes."""
    _check_model_options(family_name, given)
    options = preset_options(family_name, preset)
    options.update(given)
    smoothing = {**model_defaults(family_name), **options}.get("smoothing")
    if "k" in given and smoothing != "add-k":  # NGramConfig cannot tell a given k from its default
        raise LmlabError(f"k is the pseudo-count of smoothing add-k (got smoothing {smoothing})",
                         params=("k", "smoothing"))
    return options


def _check_model_options(family_name: str, given: dict[str, Any]) -> None:
    """Model options must be ones the family has (`order` means nothing to a GPT)."""
    takes = model_defaults(family_name)
    wrong = [name for name in given if name not in takes]
    if wrong:
        raise LmlabError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to model {family_name}, "
                         f"which takes {', '.join(takes)}", params=(*wrong, "model", *takes))


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
                         f"{context_len + 1}; use more text or a smaller context_len", params=("context_len",))
    if len(val_stream) < 2:
        raise LmlabError(f"the validation split has only {len(val_stream)} token(s); use more text, "
                         f"or give val_data", params=("val_data",))


def validation_split(run_dir: Path, config: dict[str, Any], tokenizer: Any) -> tuple[TokenStream, int]:
    """A run's validation tokens and the UTF-8 size of their text."""
    _, val_stream = _token_caches(run_dir, config, tokenizer)
    return val_stream, config["data"]["val_bytes"]


def train(data: str | None = None, *, out: str | Path, model: str | None = None, tokenizer: str | None = None,
          preset: str | None = None, val_data: str | None = None, val_fraction: float | None = None,
          model_overrides: dict[str, Any] | None = None, train_overrides: dict[str, Any] | None = None,
          tokenizer_options: dict[str, Any] | None = None, resume: bool = False,
          progress: bool = True, device: str = "cpu", pair_data: dict[str, Any] | None = None) -> RunResult:
    """Train a model on `data` (a file or folder; default: Tiny Shakespeare) into run directory `out`.

    `model` is a family (default gpt) and `preset` one of its sizes (default: the family's own);
    `model_overrides` and `train_overrides` change single options (None means "not given"), and
    `train_overrides` may give `epochs` instead of `max_steps`: the run then takes as many steps as
    that many passes over the training data need. `tokenizer` is a name (default char) or a saved
    tokenizer file. With the word tokenizer, every line end is an `<eos>` token the model predicts
    (`eos_per_line`, the PTB / WikiText convention) unless `tokenizer_options` says otherwise.
    The last `val_fraction` (default 0.1) of the text is validation unless `val_data` is given.
    `device` is where the network trains ("cpu", "cuda"); it is not a setting of the run, so a
    run trained on a GPU resumes on the CPU and back.

    With `resume=True`, continue the run in `out` from its last checkpoint; the losses match an
    uninterrupted run exactly on CPU. Every other argument may be given again as the run was
    started (so the same command works with resume added), but only `max_steps` or `epochs` may
    change: a setting that differs from the run's own is an error that names it.

    A translation family (one that trains on pairs) reads `pair_data` instead (train/pairs.py:
    source and target files, or `data` / `val_data` as TSV files, max_len, vocab).
    """
    torch_device(device)  # a device this machine lacks is refused before anything is written
    run_dir = Path(out)
    given_model = {k: v for k, v in (model_overrides or {}).items() if v is not None}
    given_train = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    given_tokenizer = {k: v for k, v in (tokenizer_options or {}).items() if v is not None}
    if "epochs" in given_train and "max_steps" in given_train:
        raise LmlabError("give epochs or max_steps, not both", params=("epochs", "max_steps"))
    given_pairs = {k: v for k, v in (pair_data or {}).items() if v is not None}
    own_family = read_run_config(run_dir)["model"]["family"] if resume else model or DEFAULT_MODEL
    if family(own_family).trains_on == "pairs":
        from lmlab.train.pairs import train_pairs

        for name, value in (("data", data), ("val_data", val_data)):
            if value is not None:
                given_pairs[name] = value
        return train_pairs(out=out, model=model or own_family, tokenizer=tokenizer, preset=preset,
                           model_overrides=given_model, train_overrides=given_train, tokenizer_options=given_tokenizer,
                           pair_data=given_pairs, resume=resume, progress=progress, device=device)
    if given_pairs:
        raise LmlabError(f"{', '.join(given_pairs)}: parallel data is for the translation families "
                         f"({', '.join(n for n, e in FAMILIES.items() if e.trains_on == 'pairs')}), not {own_family}",
                         params=(*given_pairs, "model"))
    if resume:
        config = read_run_config(run_dir)  # a run killed before its first checkpoint starts over from step 0
        TrainConfig.from_dict({**config["train"], **given_train})  # bad values first, in their own words
        _check_unchanged(run_dir, config, data=data, val_data=val_data, val_fraction=val_fraction, model=model,
                         preset=preset, model_options=given_model, tokenizer=tokenizer,
                         tokenizer_options=given_tokenizer, train_options=given_train)
        return _resume(run_dir, config, {k: v for k, v in given_train.items() if k in RESUMABLE}, progress, device)
    if (run_dir / "config.json").exists():
        raise LmlabError(f"{run_dir} already holds a run; continue it with resume, or train into another folder",
                         params=("resume",))
    check_new_folder(run_dir)  # a new run goes only into a new or empty folder
    model, tokenizer = model or DEFAULT_MODEL, tokenizer or DEFAULT_TOKENIZER
    val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    entry = family(model)
    train_config = TrainConfig.from_dict(given_train)
    options = model_options(model, preset, given_model)
    if tokenizer == "word":
        given_tokenizer.setdefault("eos_per_line", True)
    check_options(tokenizer, given_tokenizer)  # before the corpus is read
    train_text, val_text = _load_split(data, val_data, val_fraction)
    tok = build_tokenizer(tokenizer, train_text, **given_tokenizer)
    options["vocab_size"] = tok.vocab_size
    for name, token in entry.from_tokenizer.items():
        options.setdefault(name, tok.special_tokens.get(token))
    torch.manual_seed(train_config.seed)
    net = _build(model, options)  # validates the model options before anything is written
    counted = entry.trains_on == "counts"
    if counted and given_train:
        raise LmlabError(f"model {model} is counted in one pass, not trained by steps: drop the training options "
                         f"({', '.join(sorted(given_train))})", params=("model", *sorted(given_train)))
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
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "options": given_tokenizer},
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
    return _finish(run_dir, net, fit(net, train_stream, val_stream, run_dir, train_config, progress=progress,
                                     device=device))


def _build(family: str, options: dict[str, Any]) -> torch.nn.Module:
    try:
        return build_model(family, options)
    except (RuntimeError, MemoryError) as e:  # sizes past the machine's memory
        raise LmlabError(f"cannot build this {family} model ({str(e).splitlines()[0][:200]}); "
                         "use smaller sizes") from None


def _shown(value: Any) -> str:
    """A setting's value as a message shows it: JSON's true / false, text without quotes."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_unchanged(run_dir: Path, config: dict[str, Any], *, data: str | None, val_data: str | None,
                     val_fraction: float | None, model: str | None, preset: str | None,
                     model_options: dict[str, Any], tokenizer: str | None, tokenizer_options: dict[str, Any],
                     train_options: dict[str, Any]) -> None:
    """Refuse to resume with a setting that differs from the run's own (config.json), naming each;
    settings given with the run's own values are fine, so the command that started a run resumes it."""
    differences: list[tuple[str, str, str]] = []  # (what, the value given, the run's)
    params: list[str] = []

    def compare(what: str, given: Any, own: Any, *names: str, source: str = "") -> None:
        if given != own:
            differences.append((what, _shown(given) + source, _shown(own)))
            params.extend(names)

    recorded = config["data"]
    if data is not None:
        compare("the training text", str(Path(data).resolve()), recorded["path"] or str(default_corpus_path()))
    if val_data is not None:
        compare("the validation text", str(Path(val_data).resolve()),
                recorded["val_path"] or f"(none: the last {recorded['val_fraction']:.0%} of the training text)")
    if val_fraction is not None:
        compare("val_fraction", val_fraction, recorded["val_fraction"], "val_fraction")
    own_family = config["model"]["family"]
    if model is not None:
        compare("model", model, own_family, "model")
    if model in (None, own_family):
        _check_model_options(own_family, model_options)
        own_options = config["model"]["config"]
        for name, value in preset_options(own_family, preset).items() if preset is not None else ():
            if name not in model_options:
                compare(name, value, own_options.get(name), name, "preset", source=f" (from preset {preset})")
        for name, value in model_options.items():
            compare(name, value, own_options.get(name), name)
    own_tokenizer = config["tokenizer"]
    if tokenizer in TOKENIZERS:
        compare("tokenizer", tokenizer, own_tokenizer["kind"], "tokenizer")
    elif tokenizer is not None:  # a saved tokenizer file: the same tokenizer, or another one
        saved, own = load_tokenizer(Path(tokenizer)), load_tokenizer(run_dir / TOKENIZER_FILE)
        if (saved.kind, saved.to_dict()) != (own.kind, own.to_dict()):
            compare("the saved tokenizer", tokenizer, run_dir / TOKENIZER_FILE)
    if tokenizer_options and tokenizer not in (None, *TOKENIZERS):
        check_options(tokenizer, tokenizer_options)  # a saved tokenizer takes no options
    if tokenizer_options and tokenizer in (None, own_tokenizer["kind"]):
        check_options(own_tokenizer["kind"], tokenizer_options)
        in_file = load_tokenizer(run_dir / TOKENIZER_FILE).to_dict()  # what the tokenizer does, whatever was asked
        asked = own_tokenizer.get("options")  # None in runs from before options were recorded
        for name, value in tokenizer_options.items():
            own = in_file.get(name, "(not recorded)" if asked is None else asked.get(name, "(not set)"))
            compare(name, value, own, name)
    for name, value in train_options.items():
        if name not in RESUMABLE:
            compare(name, value, config["train"].get(name), name)
    if differences:
        (what, given, own), *more = differences
        listed = ", ".join([f"{what} {given} differs from this run's {own}",
                            *(f"{what} {given} from its {own}" for what, given, own in more)])
        raise LmlabError(f"{listed}; resume continues a run with its own settings: only max_steps or epochs "
                         "may change", params=(*dict.fromkeys(params), "resume", *RESUMABLE))


def _resume(run_dir: Path, config: dict[str, Any], changes: dict[str, Any], progress: bool,
            device: str = "cpu") -> RunResult:
    """Continue the run in `run_dir` (its checked `config`), with a new max_steps or epochs in `changes`."""
    if "max_steps" in changes:
        changes["epochs"] = None  # the step count now comes from max_steps
    train_config = dataclasses.replace(TrainConfig.from_dict(config["train"]), **changes)
    tok = load_tokenizer(run_dir / TOKENIZER_FILE)
    torch.manual_seed(train_config.seed)  # the same initial weights as a fresh run, if no checkpoint exists
    net = _build(config["model"]["family"], config["model"]["config"])
    remove_stale_temporaries(run_dir)  # left by a kill in the middle of an atomic write
    train_stream, val_stream = _token_caches(run_dir, config, tok)
    if changes.get("epochs") is not None:
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
    return _finish(run_dir, net, fit(net, train_stream, val_stream, run_dir, train_config, resume=True, device=device,
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
                         "generate, or train a new run into another folder")
    if state_step is not None and max_steps < state_step:
        raise LmlabError(f"{run_dir} has already trained for {state_step} steps; max_steps can only be raised "
                         f"(give {state_step} or more)", params=("max_steps",))


def _finish(run_dir: Path, net: torch.nn.Module, result: FitResult) -> RunResult:
    return RunResult(out=str(run_dir), steps=result.steps, train_loss=result.train_loss, val_loss=result.val_loss,
                     tokens_per_s=result.tokens_per_s, wall_s=result.wall_s, parameters=net.num_parameters())
