"""The `lmlab` command's parsers: a fast top-level --help, flags generated from the config
dataclasses (every option has one, with the library's default), and library errors written as flags.

Everything here runs in-process except the --help timing, which needs a fresh interpreter.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import time

import pytest

from lmlab.cli import COMMANDS, build_parser, command_parser, main
from lmlab.cli.errors import flag_names
from lmlab.cli.flags import config_options, flag, shown
from lmlab.cli.generate import generation_options
from lmlab.errors import LmlabError
from lmlab.generate.config import GenerationConfig
from lmlab.models import FAMILIES
from lmlab.train.run import model_defaults
from lmlab.train.trainer import TrainConfig

HEAVY = ("torch", "numpy", "tokenizers", "matplotlib", "transformers")
REQUIRED = {"train": ["--out", "x"], "generate": ["run"]}  # what parsing each command needs besides its options


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_lmlab_help_answers_in_under_300_ms():
    def once() -> float:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lmlab", "--help"], capture_output=True, text=True, env=env())
        elapsed = time.perf_counter() - started
        assert done.returncode == 0 and "usage: lmlab" in done.stdout, done.stderr
        return elapsed

    timings = [once() for _ in range(5)]
    assert statistics.median(timings) < 0.3, timings


def test_lmlab_help_imports_nothing_heavy():
    code = ("import sys\nfrom lmlab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env())
    assert done.returncode == 0 and done.stderr.strip() == "[]", done.stderr


def test_lmlab_help_lists_every_command_with_its_help(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert f"{name}  " in listing and command.help in listing
    (sub,) = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert list(sub.choices) == list(COMMANDS)


def test_every_command_module_has_the_parts_the_table_needs():
    for name in COMMANDS:
        parser, module = command_parser(name)
        assert module.DESCRIPTION and callable(module.run), name
        assert "json" in flag_names(parser), f"lmlab {name} has no --json"


# --- flags from the config dataclasses ------------------------------------------------------------

def actions_of(command: str) -> dict[str, object]:
    """Each option's first flag (--do-sample, not its alias --greedy)."""
    parser, _ = command_parser(command)
    actions: dict[str, object] = {}
    for action in parser._actions:
        if action.option_strings:
            actions.setdefault(action.dest, action)
    return actions


def parsed(command: str, *args: str) -> dict:
    parser, _ = command_parser(command)
    return vars(parser.parse_args([*args, *REQUIRED[command]]))


@pytest.mark.parametrize("command, config_class", [("train", TrainConfig), ("generate", GenerationConfig)])
def test_every_option_has_a_flag_with_the_librarys_default(command: str, config_class: type):
    actions = actions_of(command)
    options = config_options(config_class)
    assert options, config_class
    for spec in dataclasses.fields(config_class):
        if spec.name not in options:
            assert spec.metadata["cli"] is False
            continue
        assert spec.name in actions, f"{config_class.__name__}.{spec.name} has no flag in lmlab {command}"
        action = actions[spec.name]
        assert flag(spec.name) in action.option_strings
        assert spec.name not in parsed(command), "an option not given must be left to the library's default"
        if spec.default is None or spec.default == ():
            continue
        assert f"(default: {shown(spec.default)})" in action.help, (spec.name, action.help)
        # The default shown in --help, given back as the flag's value, is the library's default.
        if isinstance(spec.default, bool) and action.nargs == 0:
            args = [flag(spec.name) if spec.default else "--no-" + flag(spec.name)[2:]]
        else:
            args = [flag(spec.name), shown(spec.default)]
        assert parsed(command, *args)[spec.name] == spec.default, spec.name


def test_model_flags_name_the_families_that_have_them_with_their_defaults():
    actions = actions_of("train")
    for name in FAMILIES:
        for option, default in model_defaults(name).items():
            help = actions[option].help
            assert name in help and shown(default) in help, (option, help)
    assert "(gpt: 64; llama: 256;" in actions["context_len"].help  # the default presets: gpt-micro, llama-micro
    assert "(nplm: 60; rnn, lstm, gru: 200;" in actions["d_embed"].help
    assert "(nplm: 5; ngram: 3)" in actions["order"].help
    assert "eos_id" not in actions  # the tokenizer sets it
    assert "rnn" not in actions["cell"].help and "(seq2seq: gru)" in actions["cell"].help  # rnn, lstm, gru fix it
    assert actions["vocab_size"].help.startswith("--tokenizer word / bpe")  # the tokenizer's, not the model's


def test_every_model_flag_says_what_it_does():
    actions = actions_of("train")
    options = {option for name in FAMILIES for option in model_defaults(name)}
    for option in options:
        description = actions[option].help.rsplit(" (", 1)[0]
        assert description and not description.startswith("("), f"--{option} has no description: give it help"


def test_generation_flags_keep_their_old_spellings():
    options = generation_options
    parser, _ = command_parser("generate")

    def given(*args: str) -> dict:
        return options(parser.parse_args(["run", *args]))

    assert given() == {}
    assert given("--greedy") == {"do_sample": False} and given("--do-sample") == {"do_sample": True}
    assert given("--show-probs", "3") == {"top_logprobs": 3, "logprobs": True}
    assert given("--early-stopping", "never") == {"early_stopping": "never"}
    assert given("--early-stopping", "True")["early_stopping"] is True
    assert given("--stop", "\n\n", "--stop", "END") == {"stop": ["\n\n", "END"]}
    assert given("--top-k", "5", "--temperature", "0.7", "--seed", "1") == {"top_k": 5, "temperature": 0.7, "seed": 1}
    assert GenerationConfig.from_dict(given("--stop", "x")).stop == ("x",)


def test_train_flags_keep_their_old_spellings():
    args = parsed("train", "--tie-embeddings", "--no-eos-per-line", "--word-split", "space", "--lowercase",
                  "--min-freq", "2", "--vocab-size", "100", "--epochs", "3", "--direct")
    assert {k: args[k] for k in ("tie_embeddings", "eos_per_line", "split_punctuation", "lowercase", "min_freq",
                                 "vocab_size", "epochs", "direct")} == {
        "tie_embeddings": True, "eos_per_line": False, "split_punctuation": False, "lowercase": True,
        "min_freq": 2, "vocab_size": 100, "epochs": 3, "direct": True}
    assert "the choice for text that is already tokenized" in actions_of("train")["split_punctuation"].help


# --- errors: library parameters written as flags ------------------------------------------------


def error_of(capsys: pytest.CaptureFixture, *args: str) -> str:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_flag_names_map_parameters_to_this_commands_flags():
    names = flag_names(command_parser("generate")[0])
    assert names["top_p"] == "--top-p" and names["top_logprobs"] == "--show-probs"
    assert names["do_sample"] == "--do-sample"
    error = LmlabError("top_p must be a number in (0, 1], got 1.5", params=("top_p",))
    assert error.rename(names) == "--top-p must be a number in (0, 1], got 1.5"


def test_bad_options_are_named_as_flags_before_anything_is_read(capsys: pytest.CaptureFixture, tmp_path):
    # "no_such_run" is never opened: the options fail first.
    assert error_of(capsys, "generate", "no_such_run", "--top-p", "1.5") == \
        "error: --top-p must be a number in (0, 1], got 1.5"
    assert error_of(capsys, "generate", "no_such_run", "--top-k", "abc").startswith(
        "error: --top-k must be an integer >= 0")  # the library's words, not argparse's "invalid int value"
    assert error_of(capsys, "generate", "no_such_run", "--show-probs", "25").startswith(
        "error: --show-probs must be an integer in [0, 20]")
    assert "--early-stopping must be" in error_of(capsys, "generate", "no_such_run", "--early-stopping", "maybe")
    message = error_of(capsys, "generate", "no_such_run", "--greedy", "--num-return-sequences", "2")
    assert "--num-return-sequences" in message and "--num-beams" in message
    assert "--lr must be a positive number" in error_of(capsys, "train", "--out", str(tmp_path / "never_made"), "--lr", "-1")
    assert "give --epochs or --max-steps, not both" in error_of(capsys, "train", "--out", str(tmp_path / "never_made"),
                                                                "--epochs", "1", "--max-steps", "5")
    assert "argument --n-layer: must be an integer, got 'x'" in error_of(capsys, "train", "--out", str(tmp_path / "never_made"),
                                                                         "--n-layer", "x")
    assert not (tmp_path / "never_made").exists()


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    import lmlab.cli.tokenize as command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run", interrupted)
    assert main(["tokenize", "any.txt"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
