"""RNN / LSTM / GRU language models and training them the Zaremba way: a hand-written tanh RNN as
the reference, states, init, tying and strict configs; consecutive (truncated BPTT) batches; the
step-decay schedule; and an LSTM run end to end — the loss falls, `lmlab generate` and `lmlab eval`
work on it, and resuming is exact after an interruption and after a real SIGKILL.
The contract shared with every family is in test_contract.py."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.cli import main
from lmlab.data import TokenStream
from lmlab.errors import LmlabError
from lmlab.io.checkpoint import load_tensors
from lmlab.models import build_model
from lmlab.models.rnn import RNNLM, RNNConfig
from lmlab.train import TrainConfig, train
from lmlab.train.trainer import make_optimizer

MODEL = dict(d_embed=16, hidden=16, layers=2, dropout=0.1)
TRAIN = dict(optimizer="sgd", lr=1.0, schedule="step", lr_decay=0.5, lr_decay_start=1, grad_clip=5.0,
             warmup_steps=0, batch_size=8, bptt=20)  # Zaremba's recipe, scaled down
CLI_ARGS = ["--model", "lstm", "--tokenizer", "word", "--d-embed", "16", "--hidden", "16", "--layers", "2",
            "--dropout", "0.1", "--optimizer", "sgd", "--lr", "1", "--schedule", "step", "--lr-decay", "0.5",
            "--lr-decay-start", "1", "--grad-clip", "5", "--warmup-steps", "0", "--batch-size", "8", "--bptt", "20"]


def run_lstm(data: Path, out: Path, **train_overrides) -> lmlab.train.RunResult:
    return train(str(data), out=out, model="lstm", tokenizer="word", model_overrides=dict(MODEL),
                 train_overrides={**TRAIN, **train_overrides}, progress=False)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("tokens_per_s", "elapsed_s")} for row in rows]


def checkpoint_step(run_dir: Path) -> int:
    return int(load_tensors(run_dir / "train_state.safetensors")[1]["step"])


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_tensors(a / "model.safetensors")[0], load_tensors(b / "model.safetensors")[0]
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs"


class Interrupted(BaseException):
    """Stands in for a crash; not an Exception so nothing on the way up swallows it."""


def lmlab_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmlab", *args]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# --- the network ----------------------------------------------------------------------------------


def test_tanh_rnn_matches_the_equations_by_hand():
    torch.manual_seed(0)
    model = build_model("rnn", dict(vocab_size=7, d_embed=3, hidden=4, layers=2)).eval()
    ids = torch.tensor([[1, 5, 2, 6]])
    net = model.cells.net
    h = [torch.zeros(4), torch.zeros(4)]
    expected = []
    for token in ids[0]:
        x = model.embed.weight[token]
        for layer in range(2):
            w_ih, w_hh = getattr(net, f"weight_ih_l{layer}"), getattr(net, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(net, f"bias_ih_l{layer}"), getattr(net, f"bias_hh_l{layer}")
            h[layer] = torch.tanh(w_ih @ x + b_ih + w_hh @ h[layer] + b_hh)  # h_t = tanh(W x_t + U h_t-1 + b)
            x = h[layer]
        expected.append(model.head.weight @ x + model.head.bias)
    with torch.no_grad():
        logits, _ = model(ids)
        _, state = model.step(ids)
    torch.testing.assert_close(logits[0], torch.stack(expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(state[0][:, 0], torch.stack(h), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family, n_states", [("rnn", 1), ("gru", 1), ("lstm", 2)])
def test_state_is_a_tuple_of_layer_batch_hidden(family, n_states):
    model = build_model(family, dict(vocab_size=9, d_embed=4, hidden=5, layers=3))
    assert model.family == family and model.config.cell == family
    _, state = model.step(torch.tensor([[1, 2], [3, 4]]))
    assert len(state) == n_states and all(t.shape == (3, 2, 5) for t in state)


def test_weights_start_uniform_in_init_scale():
    model = build_model("lstm", dict(vocab_size=50, d_embed=20, hidden=20, layers=2, init_scale=0.1))
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert values.abs().max() <= 0.1 and values.abs().max() > 0.099
    assert abs(values.mean().item()) < 0.005


def test_lstm_small_has_zarembas_parameter_count():
    model = build_model("lstm", {"vocab_size": 10_000, **lmlab.models.PRESETS["lstm-small"][1]})
    embed, softmax = 10_000 * 200, 200 * 10_000 + 10_000
    lstm_layer = 4 * 200 * (200 + 200) + 2 * 4 * 200  # four gates: input and recurrent weights, two biases
    assert model.num_parameters() == embed + 2 * lstm_layer + softmax == 4_653_200


def test_tied_embeddings_need_equal_widths():
    with pytest.raises(LmlabError, match="d_embed == hidden"):
        RNNConfig(vocab_size=10, d_embed=8, hidden=16, tie_embeddings=True)
    model = RNNLM(RNNConfig(vocab_size=10, d_embed=8, hidden=8, tie_embeddings=True))
    assert model.head.weight is model.embed.weight
    assert model.num_parameters() == RNNLM(RNNConfig(vocab_size=10, d_embed=8, hidden=8)).num_parameters() - 80


def test_family_fixes_the_cell_and_configs_are_strict():
    with pytest.raises(LmlabError, match="cell"):
        build_model("lstm", dict(vocab_size=10, cell="gru"))
    assert build_model("gru", dict(vocab_size=10, cell="gru")).family == "gru"
    with pytest.raises(LmlabError, match="n_layer"):
        build_model("lstm", dict(vocab_size=10, n_layer=2))
    for bad, name in [(dict(cell="transformer"), "cell"), (dict(layers=0), "layers"), (dict(dropout=1.0), "dropout"),
                      (dict(init_scale=0.0), "init_scale")]:
        with pytest.raises(LmlabError, match=name):
            RNNConfig(vocab_size=10, **bad)


def test_dropout_only_while_training():
    torch.manual_seed(0)
    model = build_model("lstm", dict(vocab_size=10, d_embed=8, hidden=8, layers=2, dropout=0.5))
    ids = torch.tensor([[1, 2, 3]])
    assert not torch.equal(model(ids)[0], model(ids)[0])
    model.eval()
    assert torch.equal(model(ids)[0], model(ids)[0])


def test_padding_leaves_the_state_alone():
    torch.manual_seed(0)
    model = build_model("gru", dict(vocab_size=10, d_embed=4, hidden=6, layers=2)).eval()
    with torch.no_grad():
        _, padded = model.step(torch.tensor([[7, 7, 1, 2], [3, 4, 5, 6]]), None,
                               torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
        _, alone = model.step(torch.tensor([[1, 2]]))
    torch.testing.assert_close(padded[0][:, :1], alone[0])


# --- consecutive batches and the schedule ---------------------------------------------------------


def test_sequential_batches_predict_every_token_once_and_continue_row_by_row():
    stream = TokenStream.from_ids(range(100))
    batches = list(stream.sequential_batches(batch_size=3, bptt=7))
    assert len(batches) == stream.num_sequential_batches(3, 7) == 5  # rows of 33 targets, 7 at a time
    targets = torch.cat([y for _, y in batches], dim=1)  # (3, 33)
    assert sorted(t for t in targets.flatten().tolist() if t >= 0) == list(range(1, 100))
    for (x, y), (x_next, _) in zip(batches, batches[1:]):
        assert torch.equal((x + 1)[y >= 0], y[y >= 0])  # the next token of the same row
        assert torch.equal(x_next[:, 0], x[:, -1] + 1)  # the next batch continues each row
    assert torch.equal(stream.sequential_batch(3, 3, 7)[0], batches[3][0])


def test_sgd_is_plain():
    model = build_model("rnn", dict(vocab_size=10, d_embed=4, hidden=4, layers=1))
    optimizer = make_optimizer(model, TrainConfig(optimizer="sgd", lr=0.5))
    assert isinstance(optimizer, torch.optim.SGD)
    assert [(g["lr"], g["momentum"], g["weight_decay"]) for g in optimizer.param_groups] == [(0.5, 0.0, 0.0)]


def test_step_schedule_is_zarembas():
    config = TrainConfig(schedule="step", lr=1.0, lr_decay=0.5, lr_decay_start=4, warmup_steps=0)
    assert [config.lr_at(step=0, epoch=e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    warm = TrainConfig(schedule="step", lr=1.0, warmup_steps=3)
    assert [warm.lr_at(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("bad, name", [(dict(optimizer="adam"), "optimizer"), (dict(schedule="linear"), "schedule"),
                                       (dict(lr_decay=0.0), "lr_decay"), (dict(epochs=0), "epochs"),
                                       (dict(bptt=0), "bptt"), (dict(lr_decay_start=-1), "lr_decay_start")])
def test_train_config_rejects_bad_values(bad, name):
    with pytest.raises(LmlabError, match=name):
        TrainConfig(**bad)


# --- an LSTM run, end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory: pytest.TempPathFactory, tiny_text: str) -> tuple[Path, lmlab.train.RunResult]:
    """Three epochs on the tiny corpus, word-level, with the step schedule. (The recipe's plain SGD
    at lr 1 needs thousands of steps to leave the unigram plateau, so this run uses AdamW.)"""
    root = tmp_path_factory.mktemp("lstm")
    (root / "corpus.txt").write_text(tiny_text, encoding="utf-8")
    return root / "run", run_lstm(root / "corpus.txt", root / "run", optimizer="adamw", lr=3e-2, epochs=3,
                                  eval_every=25)


def test_lstm_loss_falls_over_epochs_with_step_decay(lstm_run):
    run_dir, result = lstm_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["family"] == "lstm" and config["model"]["config"]["cell"] == "lstm"
    train_tokens = config["data"]["train_tokens"]
    per_epoch = math.ceil(math.ceil((train_tokens - 1) / 8) / 20)
    assert result.steps == config["train"]["max_steps"] == 3 * per_epoch
    rows = metrics(run_dir)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[0] > 3.5 and losses[-1] < losses[0] - 1.0
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert val[-1] < val[0] and result.val_loss == pytest.approx(val[-1], abs=1e-5)
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    for step, lr in lrs.items():
        assert lr == 3e-2 * 0.5 ** ((step - 1) // per_epoch)  # constant in epoch 0, then halved every epoch
    tensors, meta = load_tensors(run_dir / "train_state.safetensors")
    assert meta["epoch"] == 3 and meta["batch_in_epoch"] == 0
    assert tensors["carry.0"].shape == tensors["carry.1"].shape == (2, 8, 16)  # LSTM (h, c): layers, rows, hidden


def test_word_runs_predict_every_line_end(lstm_run):
    run_dir, _ = lstm_run
    tokenizer = lmlab.load(run_dir).tokenizer
    assert tokenizer.eos_per_line and tokenizer.encode("the dog\n")[-1] == tokenizer.special_tokens["<eos>"]


def test_lmlab_generate_on_an_lstm_run(lstm_run, capsys: pytest.CaptureFixture):
    run_dir = str(lstm_run[0])
    assert main(["generate", run_dir, "--json", "--greedy", "--max-new-tokens", "6", "--prompt", "the quick"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["tokens"] == 6
    # Unequal prompts in one batch (left padding) give what each prompt gives alone.
    assert main(["generate", run_dir, "--json", "--greedy", "--max-new-tokens", "6",
                 "--prompt", "the quick", "--prompt", "seven wise kings sing of"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert batch["sequences"][0]["token_ids"] == one["sequences"][0]["token_ids"]
    bundle = lmlab.load(run_dir)
    alone = bundle.generate("seven wise kings sing of", max_new_tokens=6, do_sample=False)
    assert batch["sequences"][1]["token_ids"] == alone.sequences[0].token_ids
    assert main(["generate", run_dir, "--json", "--num-beams", "3", "--max-new-tokens", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 4
    assert main(["generate", run_dir, "--max-new-tokens", "5", "--seed", "3", "--prompt", "the"]) == 0
    assert capsys.readouterr().out.startswith("the")


def test_lmlab_eval_carries_the_state_through_the_text(lstm_run, capsys: pytest.CaptureFixture):
    run_dir, result = lstm_run
    assert main(["eval", str(run_dir), "--json", "--batch-size", "8"]) == 0
    eight_rows = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run_dir), "--json"]) == 0
    one_row = json.loads(capsys.readouterr().out)  # the standard: one row, every token sees all before it
    assert one_row["loss"] == pytest.approx(result.val_loss, abs=1e-5)  # what training reported
    assert eight_rows["loss"] != pytest.approx(one_row["loss"], abs=1e-7)  # rows that start from zero differ
    assert one_row["tokens"] == eight_rows["tokens"] == json.loads((run_dir / "config.json").read_text())[
        "data"]["val_tokens"] - 1
    bundle = lmlab.load(run_dir)
    val_text = (run_dir.parent / "corpus.txt").read_text()
    val_text = val_text[int(len(val_text) * 0.9):]
    ids = torch.tensor([bundle.tokenizer.encode(val_text)])
    with torch.no_grad():
        _, loss = bundle.model(ids[:, :-1], ids[:, 1:])
    assert one_row["loss"] == pytest.approx(loss.item(), abs=1e-5)


@pytest.mark.parametrize("family", ["rnn", "gru"])
def test_rnn_and_gru_train_too(family, tmp_path: Path, tiny_corpus: Path):
    result = train(str(tiny_corpus), out=tmp_path / family, model=family, tokenizer="word",
                   model_overrides=dict(d_embed=16, hidden=16, layers=1),
                   train_overrides=dict(optimizer="adamw", lr=3e-2, warmup_steps=0, batch_size=8, bptt=20,
                                        max_steps=30, eval_every=30), progress=False)
    losses = [r["loss"] for r in metrics(tmp_path / family) if "loss" in r]
    assert losses[-1] < losses[0] and result.val_loss < losses[0]
    assert lmlab.load(tmp_path / family).model.family == family


def test_epochs_or_max_steps_not_both(tmp_path: Path, tiny_corpus: Path):
    with pytest.raises(LmlabError, match="not both"):
        run_lstm(tiny_corpus, tmp_path / "r", epochs=1, max_steps=5)


def test_an_epoch_of_random_windows_holds_as_many_tokens_as_the_data(tmp_path: Path, tiny_corpus: Path):
    result = train(str(tiny_corpus), out=tmp_path / "gpt", model_overrides=dict(n_layer=1, n_head=2, d_model=16,
                                                                                context_len=32),
                   train_overrides=dict(epochs=2, batch_size=64, eval_every=100), progress=False)
    train_tokens = json.loads((tmp_path / "gpt" / "config.json").read_text())["data"]["train_tokens"]
    assert result.steps == 2 * (train_tokens // (64 * 32))


# --- exact resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["plain-softmax-layer", "fused-softmax-layer"])
def test_lstm_resume_after_interruption_is_exact(tmp_path: Path, tiny_corpus: Path,
                                                 monkeypatch: pytest.MonkeyPatch, fused: bool):
    import lmlab.models.base as base

    monkeypatch.setattr(base, "FUSED_MIN_VOCAB", 0 if fused else 1 << 62)  # whatever the tiny vocabulary's size
    run_lstm(tiny_corpus, tmp_path / "a", max_steps=40, eval_every=10)
    import lmlab.train.trainer as trainer

    real_save = trainer.save_model_weights

    def crash_after_step_20(run_dir, model, step):
        real_save(run_dir, model, step)
        if step == 20:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_model_weights", crash_after_step_20)
        with pytest.raises(Interrupted):
            run_lstm(tiny_corpus, tmp_path / "b", max_steps=40, eval_every=10)
    tensors, meta = load_tensors(tmp_path / "b" / "train_state.safetensors")
    assert meta["step"] == 20 and meta["batch_in_epoch"] == 20 and "carry.1" in tensors  # mid-epoch, state saved
    train(out=tmp_path / "b", resume=True, progress=False)
    assert without_timings(metrics(tmp_path / "b")) == without_timings(metrics(tmp_path / "a"))
    assert_same_weights(tmp_path / "a", tmp_path / "b")


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


def test_lstm_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path, tiny_corpus: Path,
                                                           capsys: pytest.CaptureFixture):
    # The step schedule does not depend on max_steps, so the killed run may be long (it is never at
    # risk of finishing first) and be resumed with --max-steps 80, to equal a run of 80 steps.
    max_steps, eval_every = 80, 20
    process = subprocess.Popen(
        lmlab_cli("train", "--data", str(tiny_corpus), "--out", str(tmp_path / "b"), *CLI_ARGS,
                  "--max-steps", "100000", "--eval-every", str(eval_every), "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env())
    try:
        killed_at = wait_for_checkpoint(process, tmp_path / "b", min_step=20)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert 20 <= killed_at < max_steps, "the machine ran past step 80 between two polls"
    run_lstm(tiny_corpus, tmp_path / "a", max_steps=max_steps, eval_every=eval_every)  # uninterrupted
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--max-steps", str(max_steps), "--quiet",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == max_steps and checkpoint_step(tmp_path / "b") == max_steps
    assert without_timings(metrics(tmp_path / "b")) == without_timings(metrics(tmp_path / "a"))
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_accumulated_micro_batches_weigh_by_their_tokens(tmp_path: Path):
    """An epoch's last batch is short: with grad_accum it must count per token, not as a whole batch."""
    import copy

    from lmlab.train.trainer import fit

    stream = TokenStream.from_ids([(7 * i) % 11 for i in range(2 * 5 + 1)])  # 2 rows of 5 targets
    model = RNNLM(RNNConfig(vocab_size=11, d_embed=6, hidden=5, layers=1, cell="lstm"))
    reference = copy.deepcopy(model)
    config = TrainConfig(optimizer="sgd", lr=0.5, warmup_steps=0, grad_clip=0.0, max_steps=1, batch_size=2,
                         bptt=4, grad_accum=2, eval_every=1)  # batches of 4 and 1 columns: 8 and 2 targets
    fit(model, stream, None, tmp_path / "run", config, progress=False)
    (x0, y0), (x1, y1) = stream.sequential_batch(0, 2, 4), stream.sequential_batch(1, 2, 4)
    _, loss0, state = reference.forward_with_state(x0, y0)
    _, loss1, _ = reference.forward_with_state(x1, y1, tuple(s.detach() for s in state))
    ((loss0 * 8 + loss1 * 2) / 10).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.5 * p.grad
    for (name, got), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0, msg=name)


def test_a_run_of_whole_epochs_never_trains_on_the_next_epoch(tmp_path: Path):
    """3 batches per epoch, grad_accum 2, 1 epoch: 2 steps, the second of batch 2 alone."""
    import copy

    from lmlab.train.trainer import fit

    stream = TokenStream.from_ids([(5 * i) % 11 for i in range(2 * 6 + 1)])  # 2 rows of 6 targets: 3 batches of 2
    model = RNNLM(RNNConfig(vocab_size=11, d_embed=6, hidden=5, layers=1, cell="gru"))
    reference = copy.deepcopy(model)
    config = TrainConfig(optimizer="sgd", lr=0.5, warmup_steps=0, grad_clip=0.0, max_steps=2, batch_size=2,
                         bptt=2, grad_accum=2, eval_every=2, epochs=1, schedule="step")
    fit(model, stream, None, tmp_path / "run", config, progress=False)
    state = None
    for batches in ([0, 1], [2]):
        reference.zero_grad()
        for index in batches:
            x, y = stream.sequential_batch(index, 2, 2)
            _, loss, state = reference.forward_with_state(x, y, state)
            state = tuple(s.detach() for s in state)
            (loss / len(batches)).backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.5 * p.grad
    for (name, got), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0, msg=name)
