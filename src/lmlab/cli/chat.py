"""`lmlab chat`: talk to a model in the terminal, as `ollama run` does.

A REPL around lmlab.chat.Conversation: it prompts with `>>> `, streams each answer, and takes the
commands in `COMMANDS` (/reset, /system, /set, /show, /save, /load, /exit, /help). Ctrl-C during
an answer stops that answer and returns to the prompt; Ctrl-D (or /exit) leaves; readline gives
line editing and history. Piped input (not a terminal) answers each line and exits, so chats can
be scripted; with --json every turn prints one JSON object instead of the streamed text.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from lmlab.cli.flags import add_decoding_arguments, add_model_arguments, config_options, given
from lmlab.cli.output import print_json
from lmlab.generate.config import GenerationConfig

DESCRIPTION = ("Chat with a model (a pretrained chat model such as smollm2, or any model you trained): the "
               "conversation is written in the model's own chat template and each answer streams as it is "
               "generated. Type /help for the commands.")
PROMPT = ">>> "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--system", help="the system prompt (the model's own default when the template has one)")
    add_decoding_arguments(parser, "how each answer is generated (change them with /set)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | int8 (default: float32)")
    parser.add_argument("--json", action="store_true",
                        help='print one {"prompt", "answer", "tokens", "finish_reason", "dropped_turns"} per turn')


def parse_value(text: str) -> Any:
    """/set's value: JSON where it parses (0.7, 40, true, ["a"]), else the text itself.

    >>> parse_value("0.7"), parse_value("true"), parse_value("\\\\n\\\\n"), parse_value("hello")
    (0.7, True, '\\\\n\\\\n', 'hello')
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class Repl:
    """The commands and the turns of one chat session."""

    def __init__(self, conversation: Any, as_json: bool, out: Callable[[str], None]) -> None:
        self.conversation, self.as_json, self.out = conversation, as_json, out
        self.commands: dict[str, tuple[Callable[[str], bool], str]] = {
            "/reset": (self.reset, "forget the conversation (the system prompt stays)"),
            "/system": (self.system, "TEXT: set the system prompt"),
            "/set": (self.set, "NAME VALUE: change a generation option, e.g. /set temperature 0.7"),
            "/show": (self.show, "the system prompt, the options and the turns so far"),
            "/save": (self.save, "FILE: write the transcript as JSON"),
            "/load": (self.load, "FILE: continue a transcript written by /save"),
            "/exit": (lambda rest: False, "leave (Ctrl-D too)"),
            "/help": (self.help, "this list"),
        }

    def handle(self, line: str) -> bool:
        """Run one input line; False when the session should end."""
        from lmlab.errors import LmlabError

        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            name, _, rest = line.partition(" ")
            if name not in self.commands:
                self.out(f"unknown command {name}; /help lists them\n")
                return True
            try:
                return self.commands[name][0](rest.strip())
            except LmlabError as error:  # a bad /set or /load: say why, stay up
                self.out(f"error: {error}\n")
                return True
        try:
            self.answer(line)
        except LmlabError as error:
            self.out(f"error: {error}\n")
        return True

    def answer(self, text: str) -> None:
        pieces, finish, events = [], None, None
        try:  # Ctrl-C at any moment of an answer (also before its first token) stops only that answer
            events = self.conversation.reply(text)
            if self.conversation.last.dropped:
                self.out(f"(the conversation outgrew the context window: the oldest {self.conversation.last.dropped}"
                         " turn(s) were left out)\n")
            for event in events:
                pieces.append(event.text)
                finish = event.finish_reason or finish
                if not self.as_json:
                    self.out(event.text)
        except KeyboardInterrupt:
            if events is not None:
                events.close()  # the answer so far is kept as the assistant's turn
            finish = "interrupted"
        answer = "".join(pieces)
        if self.as_json:
            print_json({"prompt": text, "answer": answer.strip(), "tokens": len(pieces) - (finish != "interrupted"),
                        "finish_reason": finish, "dropped_turns": self.conversation.last.dropped})
        else:
            self.out("\n" if finish != "interrupted" else " ^C\n")

    def reset(self, rest: str) -> bool:
        self.conversation.reset()
        self.out("(the conversation is forgotten)\n")
        return True

    def system(self, rest: str) -> bool:
        self.conversation.system = rest or None
        self.out("(system prompt set)\n" if rest else "(system prompt cleared)\n")
        return True

    def set(self, rest: str) -> bool:
        from lmlab.errors import LmlabError

        name, _, value = rest.partition(" ")
        if not name or not value.strip():
            raise LmlabError("give /set NAME VALUE, e.g. /set temperature 0.7")
        self.conversation.set(name.replace("-", "_"), parse_value(value.strip()))
        self.out(f"({name} = {value.strip()})\n")
        return True

    def show(self, rest: str) -> bool:
        self.out(json.dumps(self.conversation.transcript(), ensure_ascii=False, indent=2) + "\n")
        return True

    def save(self, rest: str) -> bool:
        from lmlab.errors import LmlabError

        if not rest:
            raise LmlabError("give /save FILE")
        self.conversation.save(rest)
        self.out(f"(saved to {rest})\n")
        return True

    def load(self, rest: str) -> bool:
        from lmlab.errors import LmlabError

        if not rest:
            raise LmlabError("give /load FILE")
        self.conversation.load(rest)
        self.out(f"(loaded {len(self.conversation.messages)} turns from {rest})\n")
        return True

    def help(self, rest: str) -> bool:
        self.out("".join(f"  {name:8} {text}\n" for name, (_, text) in self.commands.items()))
        return True


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> None:
    from lmlab.bundle import load
    from lmlab.chat import DEFAULT_OPTIONS, Conversation

    options = {**DEFAULT_OPTIONS, **given(args, [*config_options(GenerationConfig), "do_sample"])}
    GenerationConfig.from_dict(options)  # bad options fail before the model loads
    conversation = Conversation(load(args.run, dtype=args.dtype, device=args.device), system=args.system,
                                options=options)
    repl = Repl(conversation, args.json, _write)
    if not sys.stdin.isatty():  # scripted: answer each line, then leave
        for line in sys.stdin:
            if not repl.handle(line):
                break
        return
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    _write("type /help for the commands, Ctrl-D to leave\n")
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            _write("\n")
            return
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt
            _write("\n")
            continue
        if not repl.handle(line):
            return
