"""The `lmlab` command, run as a real subprocess: help, --json output, streaming, and bad input that
must end in exit code 2 with one `error:` line and no traceback.

Starting Python with torch costs seconds, so independent commands run two at a time, one trained
run directory is shared by the module, and the subcommands' --help is checked in-process.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import pytest

import lmlab
from lmlab.cli import build_parser, main
from lmlab.tokenize import GPT2Tokenizer

TRAIN_ARGS = ["--n-layer", "1", "--n-head", "2", "--d-model", "32", "--context-len", "16", "--batch-size", "4",
              "--max-steps", "20", "--eval-every", "10", "--warmup-steps", "2"]


class Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def lmlab_many(commands: Sequence[Sequence[str]], cwd: Path | None = None, timeout: float = 300) -> list[Done]:
    """Run several `python -m lmlab ...` commands, two at a time (the machine has two cores); results
    come back in the same order."""

    def run(args: Sequence[str]) -> Done:
        done = subprocess.run([sys.executable, "-m", "lmlab", *args], capture_output=True, text=True, env=env(),
                              cwd=cwd, timeout=timeout)
        return Done(done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, commands))


def lmlab_cli(*args: str, cwd: Path | None = None) -> Done:
    return lmlab_many([args], cwd=cwd)[0]


def ok(done: Done) -> Done:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def one_json_object(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got {stdout!r}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


# --- help -----------------------------------------------------------------------------------------


def subcommands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(sub.choices)


def test_lmlab_help_runs_as_a_module():
    done = ok(lmlab_cli("--help"))
    assert "usage: lmlab" in done.stdout
    for name in subcommands():
        assert name in done.stdout


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture):
    # In-process: each help costs a torch import in a subprocess, and `python -m lmlab` is checked above.
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: lmlab {name}") and captured.err == ""


# --- a trained run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_text: str) -> tuple[Path, Done]:
    """`lmlab train --json` (progress on) on the tiny corpus: (run directory, the finished process)."""
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus.txt").write_text(tiny_text, encoding="utf-8")
    done = ok(lmlab_cli("train", "--data", "corpus.txt", "--out", "run", *TRAIN_ARGS, "--json", cwd=root))
    return root / "run", done


def test_train_json_stdout_is_one_json_object(trained):
    _, done = trained
    one_json_object(done.stdout)


def test_train_json_prints_the_summary(trained):
    run_dir, done = trained
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == {"train_loss", "val_loss", "steps", "tokens_per_s", "wall_s", "out"}
    assert summary["steps"] == 20
    assert math.isfinite(summary["train_loss"]) and math.isfinite(summary["val_loss"])
    assert summary["tokens_per_s"] > 0 and summary["wall_s"] >= 0
    assert (run_dir.parent / summary["out"]).resolve() == run_dir.resolve()
    assert (run_dir / "model.safetensors").is_file()


def test_generate_json_stream_and_eval(trained):
    run_dir, _ = trained
    greedy = ["--max-new-tokens", "5", "--greedy", "--prompt", "The "]
    sampled = ["--max-new-tokens", "20", "--seed", "7", "--top-k", "5", "--prompt", "A"]
    as_json, streamed, evaluated, seeded = lmlab_many([
        ["generate", str(run_dir), "--json", *greedy],
        ["generate", str(run_dir), *greedy],
        ["eval", str(run_dir), "--json"],
        ["generate", str(run_dir), "--json", *sampled],
    ])
    result = one_json_object(ok(as_json).stdout)
    assert set(result) == {"sequences", "text", "tokens"}
    assert [s["text"] for s in result["sequences"]] == [result["text"]]
    assert result["sequences"][0]["tokens"] == 5 and len(result["sequences"][0]["token_ids"]) == 5
    assert result["tokens"] == 5 and len(result["text"]) == 5  # char tokenizer: one character per token
    # Streaming writes the prompt, then the same text, then a newline.
    assert ok(streamed).stdout == "The " + result["text"] + "\n"

    scores = one_json_object(ok(evaluated).stdout)
    assert set(scores) == {"loss", "perplexity", "bits_per_byte", "tokens", "bytes"}
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-9)
    assert scores["tokens"] > 0 and scores["bytes"] > 0
    # ASCII text and a char tokenizer: every predicted token is one byte.
    assert scores["bits_per_byte"] == pytest.approx(scores["loss"] / math.log(2), rel=1e-9)

    # The command and the library agree, for greedy and for seeded sampling.
    bundle = lmlab.load(str(run_dir))
    assert bundle.generate("The ", max_new_tokens=5, do_sample=False).text == result["text"]
    library = bundle.generate("A", max_new_tokens=20, seed=7, top_k=5)
    from_cli = one_json_object(ok(seeded).stdout)
    assert (from_cli["text"], from_cli["tokens"]) == (library.text, 20)
    assert from_cli["sequences"][0]["token_ids"] == library.sequences[0].token_ids
    assert from_cli["sequences"][0]["logprob"] == pytest.approx(library.sequences[0].logprob)
    # Streaming and the non-streamed result agree for seeded sampling too.
    assert "".join(e.text for e in bundle.generate("A", max_new_tokens=20, seed=7, top_k=5, stream=True)) == library.text


def test_tokenize_json_matches_gpt2(tmp_path: Path):
    text = "Hello world, it's 42 naïve cafés!\n  Tabs\tand  spaces\n\n"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    out = one_json_object(ok(lmlab_cli("tokenize", str(tmp_path / "t.txt"), "--tokenizer", "gpt2", "--json")).stdout)
    assert out["ids"] == GPT2Tokenizer().encode(text)
    assert out["tokens"] == len(out["ids"]) and out["bytes"] == len(text.encode("utf-8"))


# --- bad input ------------------------------------------------------------------------------------

BAD_INPUT = {
    "missing data file": (["train", "--data", "nope.txt", "--out", "r1"], "nope.txt"),
    "empty corpus": (["train", "--data", "empty.txt", "--out", "r2"], "empty"),
    "unknown preset": (["train", "--data", "corpus.txt", "--preset", "gpt-huge", "--out", "r3"], "gpt-huge"),
    "top-p above 1": (["generate", "RUN", "--top-p", "1.5"], "--top-p must be"),
    "newer format version": (["eval", "NEWER", "--json"], "upgrade"),
    "nonexistent run directory": (["generate", "no_such_run", "--max-new-tokens", "2"], "no_such_run"),
}


@pytest.fixture(scope="module")
def bad_input_results(trained, tmp_path_factory: pytest.TempPathFactory, tiny_text: str) -> dict[str, Done]:
    run_dir, _ = trained
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.txt").write_text("", encoding="utf-8")
    (root / "corpus.txt").write_text(tiny_text, encoding="utf-8")
    newer = root / "newer"
    shutil.copytree(run_dir, newer)
    config = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    paths = {"RUN": str(run_dir), "NEWER": str(newer)}
    commands = [[paths.get(arg, arg) for arg in args] for args, _ in BAD_INPUT.values()]
    results = dict(zip(BAD_INPUT, lmlab_many(commands, cwd=root)))
    results["(directories)"] = Done(0, "\n".join(sorted(p.name for p in root.iterdir())), "")
    return results


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_error_line(case: str, bad_input_results: dict[str, Done]):
    done = bad_input_results[case]
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert BAD_INPUT[case][1] in lines[0]
    assert done.stdout == ""


def test_failed_train_creates_no_run_directory(bad_input_results: dict[str, Done]):
    created = bad_input_results["(directories)"].stdout.split("\n")
    assert not {"r1", "r2", "r3"} & set(created)


# --- word tokenizer flags -------------------------------------------------------------------------

def test_word_tokenizer_flags_reach_the_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture):
    """PTB-style text is already tokenized: --word-split space keeps "don't" and "<unk>" whole."""
    (tmp_path / "ptb.txt").write_text("The cat don't sit <unk> .\nthe dog sat .\n" * 20, encoding="utf-8")
    args = ["train", "--model", "ngram", "--order", "2", "--data", str(tmp_path / "ptb.txt"), "--tokenizer", "word",
            "--word-split", "space", "--lowercase", "--min-freq", "2", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    tok = lmlab.load(tmp_path / "run").tokenizer
    assert tok.split("The don't X.\n") == ["the", "don't", "x.", "\n"]
    assert tok.encode("THE CAT\n") == tok.encode("the cat\n") and tok.vocab.count("the") == 1
    capsys.readouterr()
    assert main([*args[:7], "--tokenizer", "char", "--lowercase", "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --lowercase is only for --tokenizer word") and not (tmp_path / "bad").exists()


# --- nothing a user made is lost; damaged run directories are caught ---------------------------------


def error_of(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `lmlab ARGS` in-process; it must fail with exit code 2 and one `error:` line, returned."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


def copy_run(trained, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(trained[0], tmp_path / name))


def test_train_never_writes_into_a_folder_holding_other_files(tmp_path: Path, capsys, tiny_text: str):
    (tmp_path / "corpus.txt").write_text(tiny_text, encoding="utf-8")
    mine = tmp_path / "mine"
    (mine / "cache").mkdir(parents=True)
    (mine / "cache" / "train.bin").write_text("precious")
    (mine / "model.safetensors").write_text("precious too")
    train = ["train", "--data", str(tmp_path / "corpus.txt"), *TRAIN_ARGS, "--quiet", "--out"]
    assert "already holds files" in error_of(capsys, *train, str(mine))
    assert (mine / "cache" / "train.bin").read_text() == "precious"
    assert (mine / "model.safetensors").read_text() == "precious too"
    assert "is a file" in error_of(capsys, *train, str(tmp_path / "corpus.txt"))
    assert "under a file" in error_of(capsys, *train, str(tmp_path / "corpus.txt" / "run"))
    (tmp_path / "one.txt").write_text("abcdefghij" * 3, encoding="utf-8")  # too short for a window: fails after mkdir
    assert "training data" in error_of(capsys, "train", "--data", str(tmp_path / "one.txt"), "--out",
                                       str(tmp_path / "new"), "--quiet")
    assert not (tmp_path / "new").exists()


def test_resume_refuses_what_would_lose_training(trained, tmp_path: Path, capsys):
    run = copy_run(trained, tmp_path)
    assert "only be raised" in error_of(capsys, "train", "--out", str(run), "--resume", "--max-steps", "5")
    for flags in (["--model", "lstm"], ["--tokenizer", "bpe"], ["--val-data", "x.txt"]):
        assert "--resume continues" in error_of(capsys, "train", "--out", str(run), "--resume", *flags)
    weights = (run / "model.safetensors").read_bytes()
    (run / "train_state.safetensors").unlink()
    assert "trained for 20 steps" in error_of(capsys, "train", "--out", str(run), "--resume", "--max-steps", "30")
    assert (run / "model.safetensors").read_bytes() == weights


def test_resume_accepts_the_command_that_started_the_run(trained, tmp_path: Path, monkeypatch, capsys):
    """The same `lmlab train ...` with --resume added continues the run; --max-steps may change."""
    run = copy_run(trained, tmp_path)
    monkeypatch.chdir(trained[0].parent)  # where the run was started: corpus.txt is here
    again = ["train", "--data", "corpus.txt", "--out", str(run), *TRAIN_ARGS, "--resume", "--quiet", "--json"]
    capsys.readouterr()
    assert main(again) == 0
    assert one_json_object(capsys.readouterr().out)["steps"] == 20
    assert main([*again, "--max-steps", "22", "--tokenizer", "char", "--model", "gpt"]) == 0  # the last --max-steps wins
    assert one_json_object(capsys.readouterr().out)["steps"] == 22


@pytest.mark.parametrize("change, message", [
    (["--d-model", "64"], "error: --d-model 64 differs from this run's 32; --resume continues a run with its own "
                          "settings: only --max-steps or --epochs may change"),
    (["--lr", "0.01", "--n-head", "4"], "error: --n-head 4 differs from this run's 2, --lr 0.01 from its 0.001;"),
    (["--tokenizer", "word"], "error: --tokenizer word differs from this run's char;"),
    (["--data", "other.txt"], "error: the training text "),
    (["--preset", "gpt-small"], "error: --n-layer 6 (from --preset gpt-small) differs from this run's 1, --n-head 6 "
                                "(from --preset gpt-small) from its 2,"),
    (["--order", "3"], "error: --order does not apply to --model gpt"),
    (["--lowercase"], "error: --lowercase is only for --tokenizer word (got --tokenizer char)"),
])
def test_resume_refuses_a_changed_setting_naming_it(trained, tmp_path: Path, monkeypatch, capsys, change, message):
    run = copy_run(trained, tmp_path)
    monkeypatch.chdir(trained[0].parent)
    before = [(run / name).read_bytes() for name in ("config.json", "model.safetensors")]
    started = [] if "--preset" in change else ["--data", "corpus.txt", *TRAIN_ARGS]  # (given sizes win over a preset)
    args = ["train", *started, "--out", str(run), "--resume", "--quiet", *change]
    assert error_of(capsys, *args).startswith(message)
    assert [(run / name).read_bytes() for name in ("config.json", "model.safetensors")] == before


def test_resume_compares_word_tokenizer_options(tmp_path: Path, capsys, tiny_text: str):
    (tmp_path / "corpus.txt").write_text(tiny_text, encoding="utf-8")
    args = ["train", "--model", "ngram", "--order", "2", "--data", str(tmp_path / "corpus.txt"), "--tokenizer", "word",
            "--word-split", "space", "--lowercase", "--min-freq", "2", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet", "--no-eos-per-line"]) == 2
    assert "--no-eos-per-line false differs from this run's true" in capsys.readouterr().err
    assert "--min-freq 3 differs from this run's 2" in error_of(capsys, *args, "--resume", "--min-freq", "3")
    assert "--vocab-size 50 differs from this run's (not set)" in error_of(capsys, *args, "--resume",
                                                                          "--vocab-size", "50")


def test_resume_removes_temporaries_a_kill_left(trained, tmp_path: Path, capsys):
    run = copy_run(trained, tmp_path)
    (run / ".train_state.safetensors.ab12cd_3.tmp").write_bytes(b"half")
    (run / "cache" / ".val.bin.zz99yy88.tmp").write_bytes(b"half")
    (run / "notes.tmp").write_text("mine")
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert sorted(p.name for p in run.rglob("*.tmp")) == ["notes.tmp"]


def test_a_damaged_token_cache_is_rebuilt_not_trusted(trained, tmp_path: Path, capsys):
    run = copy_run(trained, tmp_path)
    assert main(["eval", str(run), "--json"]) == 0
    expected = one_json_object(capsys.readouterr().out)
    (run / "cache" / "val.bin").write_bytes((run / "cache" / "val.bin").read_bytes()[:100])
    assert main(["eval", str(run), "--json"]) == 0
    assert one_json_object(capsys.readouterr().out) == expected
    (run / "cache" / "val.bin.json").write_text("{not json")
    assert main(["eval", str(run), "--json"]) == 0
    assert one_json_object(capsys.readouterr().out) == expected


@pytest.mark.parametrize("damage, message", [
    (lambda c: [1, 2], "format_version"),
    (lambda c: {**c, "model": "gpt"}, '"model"'),
    (lambda c: {**c, "model": {**c["model"], "config": None}}, '"model"'),
    (lambda c: {**c, "data": None}, '"data"'),
    (lambda c: {**c, "model": {**c["model"], "config": {**c["model"]["config"], "d_model": 64}}}, "does not fit"),
])
def test_damaged_config_json_is_one_error_line(trained, tmp_path: Path, capsys, damage, message):
    run = copy_run(trained, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(damage(config)))
    assert message in error_of(capsys, "eval", str(run))


def test_a_tokenizer_that_is_not_the_models_is_caught_at_load(trained, tmp_path: Path, capsys):
    run = copy_run(trained, tmp_path)
    data = json.loads((run / "tokenizer.json").read_text())
    data["chars"] += "\u2603\u2604"  # a char tokenizer with two characters the model never saw
    (run / "tokenizer.json").write_text(json.dumps(data))
    assert "not the one this run was trained with" in error_of(capsys, "generate", str(run), "--prompt", "a")


def test_folders_where_files_belong_and_bad_numbers_are_one_error_line(trained, tmp_path: Path, capsys):
    run = copy_run(trained, tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    assert "metrics.jsonl" in error_of(capsys, "train", "--out", str(run), "--resume", "--max-steps", "25")
    assert "seed" in error_of(capsys, "generate", str(trained[0]), "--seed", str(2**70))
    assert "temperature" in error_of(capsys, "generate", str(trained[0]), "--temperature", "1e-320")
    assert "positive integer" in error_of(capsys, "train", "--out", str(tmp_path / "x"), "--batch-size", "abc")
    assert "--order does not apply to --model gpt" in error_of(capsys, "train", "--out", str(tmp_path / "x"),
                                                               "--order", "3")
    assert "--k is the pseudo-count" in error_of(capsys, "train", "--model", "ngram", "--out", str(tmp_path / "x"),
                                                 "--k", "0.5")


def test_export_and_compare_never_overwrite_user_files(trained, tmp_path: Path, capsys, tiny_text: str):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_text("precious")
    assert "not an empty folder" in error_of(capsys, "export", str(trained[0]), "--format", "hf", "--out", str(mine))
    (tmp_path / "text.txt").write_text(tiny_text[:2000], encoding="utf-8")
    (tmp_path / "report.md").write_text("my notes")
    compare = ["compare", str(trained[0]), "--data", str(tmp_path / "text.txt"), "--out"]
    assert "not an lmlab comparison" in error_of(capsys, *compare, str(tmp_path / "report"))
    assert (tmp_path / "report.md").read_text() == "my notes"
    assert main([*compare, str(tmp_path / "table.json")]) == 0  # a suffix is dropped, not doubled
    assert main([*compare, str(tmp_path / "table")]) == 0  # an earlier comparison is replaced
    assert sorted(p.name for p in tmp_path.glob("table*")) == ["table.json", "table.md", "table.png"]


def test_changed_validation_text_is_caught_when_the_cache_is_rebuilt(tmp_path: Path, capsys, tiny_text: str):
    (tmp_path / "train.txt").write_text(tiny_text, encoding="utf-8")
    (tmp_path / "val.txt").write_text(tiny_text[:3000], encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", "--model", "ngram", "--order", "2", "--data", str(tmp_path / "train.txt"),
                 "--val-data", str(tmp_path / "val.txt"), "--out", str(run), "--quiet"]) == 0
    shutil.rmtree(run / "cache")
    assert main(["eval", str(run), "--json"]) == 0  # rebuilt from the unchanged texts
    shutil.rmtree(run / "cache")
    (tmp_path / "val.txt").write_text(tiny_text[:2000], encoding="utf-8")
    assert "validation data" in error_of(capsys, "eval", str(run))
