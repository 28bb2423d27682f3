"""Training: the loss falls, the run directory has every file, configs are strict, the schedule's
endpoints, and resuming is exact — after an in-process interruption and after a real SIGKILL."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.errors import LmlabError
from lmlab.io.checkpoint import load_tensors
from lmlab.train import TrainConfig, train
from lmlab.train.schedule import warmup_cosine

MODEL = dict(n_layer=1, n_head=2, d_model=32, context_len=16)
TRAIN = dict(batch_size=4, warmup_steps=5, lr=3e-3)
CLI_MODEL = ["--n-layer", "1", "--n-head", "2", "--d-model", "32", "--context-len", "16"]
CLI_TRAIN = ["--batch-size", "4", "--warmup-steps", "5", "--lr", "3e-3"]
TIMING_KEYS = ("tokens_per_s", "elapsed_s")


def run_train(data: Path, out: Path, **train_overrides) -> lmlab.train.RunResult:
    return train(str(data), out=out, model_overrides=dict(MODEL), train_overrides={**TRAIN, **train_overrides},
                 progress=False)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def checkpoint_step(run_dir: Path) -> int:
    return int(load_tensors(run_dir / "train_state.safetensors")[1]["step"])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / "model.safetensors")[0]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs"


def lmlab_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmlab", *args]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# --- one run, end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_text: str) -> tuple[Path, Path, lmlab.train.RunResult]:
    """A 60-step run on the tiny corpus: (corpus, run directory, result)."""
    root = tmp_path_factory.mktemp("run")
    corpus = root / "corpus.txt"
    corpus.write_text(tiny_text, encoding="utf-8")
    result = run_train(corpus, root / "out", max_steps=60, eval_every=30)
    return corpus, root / "out", result


def test_loss_falls(finished_run):
    _, run_dir, result = finished_run
    losses = [row["loss"] for row in metrics(run_dir) if "loss" in row]
    val_losses = [row["val_loss"] for row in metrics(run_dir) if "val_loss" in row]
    assert len(losses) == 6 and len(val_losses) == 2
    assert losses[0] > 3.5  # about log(vocab size) at the start
    assert losses[-1] < losses[0] - 0.5
    assert val_losses[-1] < val_losses[0]
    assert result.steps == 60
    assert result.train_loss == pytest.approx(losses[-1], abs=1e-5)
    assert result.val_loss == pytest.approx(val_losses[-1], abs=1e-5)
    assert result.parameters > 0 and result.tokens_per_s > 0


def test_run_directory_has_every_file(finished_run):
    _, run_dir, _ = finished_run
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_state.safetensors",
                 "metrics.jsonl", "loss.png"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["format_version"] == 1
    assert config["model"]["family"] == "gpt"
    assert {k: config["model"]["config"][k] for k in MODEL} == MODEL
    assert config["train"]["max_steps"] == 60 and config["train"]["batch_size"] == 4
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert checkpoint_step(run_dir) == 60
    assert not list(run_dir.glob("*.tmp")), "atomic writes left temporaries behind"
    rows = metrics(run_dir)
    assert [r["step"] for r in rows if "loss" in r] == [10, 20, 30, 40, 50, 60]
    assert [r["step"] for r in rows if "val_loss" in r] == [30, 60]


def test_trained_run_loads(finished_run):
    _, run_dir, _ = finished_run
    bundle = lmlab.load(str(run_dir))
    assert bundle.tokenizer.vocab_size == bundle.model.config.vocab_size
    assert not bundle.model.training
    assert_same_weights(run_dir, run_dir)  # the weights file reads back
    trained_state = load_tensors(run_dir / "train_state.safetensors")[0]
    for name, tensor in bundle.model.state_dict().items():
        assert torch.equal(tensor, trained_state[f"model.{name}"]), name


def test_train_into_existing_run_raises(finished_run):
    corpus, run_dir, _ = finished_run
    before = (run_dir / "config.json").read_bytes()
    with pytest.raises(LmlabError, match="already holds a run"):
        run_train(corpus, run_dir, max_steps=5)
    assert (run_dir / "config.json").read_bytes() == before


def test_resume_only_changes_max_steps(finished_run):
    _, run_dir, _ = finished_run
    with pytest.raises(LmlabError, match="lr"):
        train(out=run_dir, resume=True, train_overrides=dict(lr=1.0), progress=False)


def test_resume_without_checkpoint_dir(tmp_path: Path):
    with pytest.raises(LmlabError, match="does not exist"):
        train(out=tmp_path / "nothing", resume=True, progress=False)


def test_too_little_training_text_fails_before_anything_is_written(tmp_path: Path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("abcdefghijklmnopqrst", encoding="utf-8")  # 18 training characters
    with pytest.raises(LmlabError, match="context.len"):
        train(str(corpus), out=tmp_path / "out", model_overrides={**MODEL, "context_len": 32},
              train_overrides=dict(max_steps=2, batch_size=2), progress=False)
    assert not (tmp_path / "out" / "config.json").exists()
    # What the message advises: a smaller context length, same --out.
    result = train(str(corpus), out=tmp_path / "out", model_overrides={**MODEL, "context_len": 4},
                   train_overrides=dict(max_steps=2, batch_size=2), progress=False)
    assert result.steps == 2


def test_empty_validation_split_is_not_a_perfect_score(tmp_path: Path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("abcdefghij", encoding="utf-8")  # the last 10% is one character: nothing to predict
    try:
        result = train(str(corpus), out=tmp_path / "out", model_overrides={**MODEL, "context_len": 4},
                       train_overrides=dict(max_steps=2, eval_every=2, batch_size=2), progress=False)
    except LmlabError as e:  # an error that says the validation text is too short is fine
        assert "valid" in str(e).lower()
        return
    assert result.val_loss is None or math.isnan(result.val_loss)
    assert all(row.get("val_loss") != 0.0 for row in metrics(tmp_path / "out"))


# --- configs and the schedule ---------------------------------------------------------------------


def test_train_config_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(LmlabError, match="learning_rate.*max_step\\b|max_step\\b.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1e-3, "max_step": 5, "batch_size": 2})
    assert TrainConfig.from_dict({"max_steps": 5}) == TrainConfig(max_steps=5)
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


@pytest.mark.parametrize("bad, name", [(dict(batch_size=0), "batch_size"), (dict(lr=0.0), "lr"),
                                       (dict(max_steps=-1), "max_steps"), (dict(warmup_steps=-2), "warmup_steps"),
                                       (dict(precision="fp8"), "precision"), (dict(eval_every=1.5), "eval_every"),
                                       (dict(lr=float("nan")), "lr"), (dict(lr=float("inf")), "lr"),
                                       (dict(min_lr=-1e-4), "min_lr"), (dict(lr=1e-3, min_lr=1e-2), "min_lr"),
                                       (dict(warmup_steps=2.5), "warmup_steps"), (dict(weight_decay=-0.1), "weight_decay"),
                                       (dict(grad_clip=float("nan")), "grad_clip"), (dict(grad_clip=-1.0), "grad_clip"),
                                       (dict(beta1=1.0), "beta1"), (dict(beta2=-0.5), "beta2"),
                                       (dict(beta1=float("nan")), "beta1")])
def test_train_config_rejects_bad_values(bad, name):
    with pytest.raises(LmlabError, match=name):
        TrainConfig(**bad)


def test_unknown_model_override_is_rejected_before_anything_is_written(tmp_path: Path, tiny_corpus: Path):
    with pytest.raises(LmlabError, match="n_heads"):
        train(str(tiny_corpus), out=tmp_path / "out", model_overrides=dict(n_heads=2), progress=False)
    assert not (tmp_path / "out").exists()


def test_warmup_cosine_endpoints():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=4, decay_steps=20)
    assert warmup_cosine(0, **kw) == pytest.approx(1 / 5)
    assert warmup_cosine(3, **kw) == pytest.approx(4 / 5)
    assert warmup_cosine(4, **kw) == pytest.approx(1.0)  # the peak right after warmup
    assert warmup_cosine(12, **kw) == pytest.approx(0.55)  # halfway through the decay
    assert warmup_cosine(20, **kw) == pytest.approx(0.1)
    assert warmup_cosine(1000, **kw) == pytest.approx(0.1)
    decay = [warmup_cosine(s, **kw) for s in range(4, 21)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    ramp = [warmup_cosine(s, **kw) for s in range(0, 5)]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    assert warmup_cosine(0, lr=2.0, min_lr=0.0, warmup_steps=0, decay_steps=10) == pytest.approx(2.0)


def test_train_config_lr_at_defaults_min_lr_to_a_tenth():
    config = TrainConfig(max_steps=50, lr=0.01, warmup_steps=10)
    assert config.lr_at(10) == pytest.approx(0.01)
    assert config.lr_at(50) == pytest.approx(0.001)
    assert TrainConfig(max_steps=50, lr=0.01, min_lr=0.0, warmup_steps=10).lr_at(50) == 0.0


# --- exact resume ---------------------------------------------------------------------------------


class Interrupted(BaseException):
    """Stands in for a crash; not an Exception so nothing on the way up swallows it."""


def test_resume_after_interruption_is_exact(tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch):
    run_train(tiny_corpus, tmp_path / "a", max_steps=40, eval_every=10)

    import lmlab.train.trainer as trainer

    real_save = trainer.save_model_weights

    def crash_after_step_20(run_dir, model, step):
        real_save(run_dir, model, step)
        if step == 20:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_model_weights", crash_after_step_20)
        with pytest.raises(Interrupted):
            run_train(tiny_corpus, tmp_path / "b", max_steps=40, eval_every=10)
    assert checkpoint_step(tmp_path / "b") == 20
    result = train(out=tmp_path / "b", resume=True, progress=False)
    assert result.steps == 40
    assert without_timings(metrics(tmp_path / "b")) == without_timings(metrics(tmp_path / "a"))
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_resume_mid_log_window_logs_the_same_losses(tmp_path: Path, tiny_corpus: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    run_train(tiny_corpus, tmp_path / "a", max_steps=20, eval_every=5)  # log_every is 10
    import lmlab.train.trainer as trainer

    real_save = trainer.save_model_weights

    def crash_after_step_5(run_dir, model, step):
        real_save(run_dir, model, step)
        if step == 5:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_model_weights", crash_after_step_5)
        with pytest.raises(Interrupted):
            run_train(tiny_corpus, tmp_path / "b", max_steps=20, eval_every=5)
    train(out=tmp_path / "b", resume=True, progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")  # the training itself is exact
    assert without_timings(metrics(tmp_path / "b")) == without_timings(metrics(tmp_path / "a"))


def test_resume_finished_run_with_more_steps(tmp_path: Path, tiny_corpus: Path):
    run_train(tiny_corpus, tmp_path / "r", max_steps=20, eval_every=10)
    result = train(out=tmp_path / "r", resume=True, train_overrides=dict(max_steps=30), progress=False)
    assert result.steps == 30 and checkpoint_step(tmp_path / "r") == 30
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["max_steps"] == 30
    assert [r["step"] for r in metrics(tmp_path / "r") if "loss" in r] == [10, 20, 30]
    again = train(out=tmp_path / "r", resume=True, progress=False)  # nothing left to do
    assert again.steps == 30 and again.val_loss is not None


def test_crash_before_first_checkpoint_can_be_recovered(tmp_path: Path, tiny_corpus: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    import lmlab.train.trainer as trainer

    def crash(*args, **kwargs):
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_tensors", crash)  # dies while writing the step-0 checkpoint
        with pytest.raises(Interrupted):
            run_train(tiny_corpus, tmp_path / "r", max_steps=10, eval_every=10)
    assert (tmp_path / "r" / "config.json").exists() and not (tmp_path / "r" / "train_state.safetensors").exists()
    try:
        result = train(out=tmp_path / "r", resume=True, progress=False)
    except LmlabError as e:  # then do what the message says
        assert "without --resume" in str(e)
        result = run_train(tiny_corpus, tmp_path / "r", max_steps=10, eval_every=10)
    assert result.steps == 10


def start_cli_run(corpus: Path, out: Path, max_steps: int, eval_every: int) -> subprocess.Popen:
    return subprocess.Popen(
        lmlab_cli("train", "--data", str(corpus), "--out", str(out), *CLI_MODEL, *CLI_TRAIN,
                  "--max-steps", str(max_steps), "--eval-every", str(eval_every), "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env())


def wait_for_checkpoint(process: subprocess.Popen, run_dir: Path, min_step: int, timeout: float = 120.0) -> int:
    """Poll until train_state.safetensors holds a step >= min_step; return that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "train_state.safetensors").exists():
            step = checkpoint_step(run_dir)
            if step >= min_step:
                return step
        if process.poll() is not None:
            raise AssertionError(f"training exited early ({process.returncode}): {process.stderr.read().decode()}")
        time.sleep(0.005)
    process.kill()
    raise AssertionError("no checkpoint appeared in time")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()


def resume_cli(out: Path) -> dict:
    done = subprocess.run(lmlab_cli("train", "--out", str(out), "--resume", "--quiet", "--json"),
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path, tiny_corpus: Path):
    max_steps = 60
    process = start_cli_run(tiny_corpus, tmp_path / "b", max_steps, eval_every=20)
    try:
        killed_at = wait_for_checkpoint(process, tmp_path / "b", min_step=20)
    finally:
        kill(process)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 20 <= killed_at < max_steps
    run_train(tiny_corpus, tmp_path / "a", max_steps=max_steps, eval_every=20)  # uninterrupted, in-process

    assert lmlab.load(str(tmp_path / "b")) is not None
    summary = resume_cli(tmp_path / "b")
    assert summary["steps"] == max_steps and checkpoint_step(tmp_path / "b") == max_steps
    rows_a, rows_b = without_timings(metrics(tmp_path / "a")), without_timings(metrics(tmp_path / "b"))
    after = [row for row in rows_b if row["step"] > killed_at]
    assert after and after == [row for row in rows_a if row["step"] > killed_at]  # exactly equal floats
    assert rows_b == rows_a
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_sigkill_at_a_random_moment_leaves_a_loadable_resumable_run(tmp_path: Path, tiny_corpus: Path):
    max_steps, eval_every = 100, 10
    run_dir = tmp_path / "r"
    process = start_cli_run(tiny_corpus, run_dir, max_steps, eval_every)
    try:
        wait_for_checkpoint(process, run_dir, min_step=0)  # the run exists from here on
        started = time.monotonic()
        wait_for_checkpoint(process, run_dir, min_step=10)
        interval = time.monotonic() - started  # this machine's time for 10 steps and a checkpoint
        delay = random.uniform(0.0, 2.0 * interval)  # somewhere in steps 10..~30: mid-step, -write or -eval
        time.sleep(delay)
    finally:
        kill(process)
    assert process.returncode == -signal.SIGKILL, f"the run finished before it could be killed ({delay:.3f} s)"
    bundle = lmlab.load(str(run_dir))
    assert bundle.model.config.d_model == 32
    summary = resume_cli(run_dir)
    assert summary["steps"] == max_steps and math.isfinite(summary["train_loss"])
    assert checkpoint_step(run_dir) == max_steps
    rows = metrics(run_dir)
    assert [r["step"] for r in rows if "loss" in r] == list(range(10, max_steps + 1, 10))  # no gaps, no repeats
    assert [r["step"] for r in rows if "val_loss" in r] == list(range(10, max_steps + 1, 10))


def test_keep_freed_memory_takes_on_linux_glibc_and_is_idempotent():
    import platform

    from lmlab.runtime import keep_freed_memory

    took = keep_freed_memory()
    assert keep_freed_memory() is took
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert took is True


def test_checkpoints_are_byte_identical_across_processes_and_old_headers_still_read(tmp_path: Path):
    """The same tensors and metadata give the same file in any process (one sorted metadata key)."""
    script = ("import sys, torch; from lmlab.io.checkpoint import save_tensors; w = torch.arange(6.).reshape(2, 3); "
              "save_tensors(sys.argv[1], {'a': w, 'tied': w, 'b': torch.ones(2)}, "
              "{'step': 7, 'epoch': 1, 'batch_in_epoch': 3, 'zeta': 'z'})")
    for name in ("one", "two"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    tensors, meta = load_tensors(tmp_path / "one")
    assert meta == {"step": 7, "epoch": 1, "batch_in_epoch": 3, "zeta": "z"} and tensors["tied"] is tensors["a"]
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, tmp_path / "old", metadata={"step": "5", "aliases": '{"c": "a"}'})
    tensors, meta = load_tensors(tmp_path / "old")  # written with one JSON value per key
    assert meta == {"step": 5} and tensors["c"] is tensors["a"]
